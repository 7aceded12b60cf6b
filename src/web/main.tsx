// The dashboard page's entry point: its style, then the app in #app. Bundled with everything it
// imports into dist/web/dashboard.js by scripts/build-web.mjs (`npm run build`): the page loads
// nothing else, from nowhere else.
import { render } from 'preact';
import { App } from './app.js';
import style from './style.css';

const element = document.createElement('style');
element.textContent = style;
document.head.append(element);

const root = document.getElementById('app');
if (root !== null) {
  root.textContent = '';
  render(<App />, root);
}
