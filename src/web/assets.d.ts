// The bundler (scripts/build-web.mjs) loads a .css file as its text, which main.tsx puts in the
// page's one style element.
declare module '*.css' {
  const text: string;
  export default text;
}
