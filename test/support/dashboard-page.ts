// The dashboard as a person sees it, for the browser test (test/lab-dashboard.test.ts) and the
// screenshot of the docs (scripts/dashboard-screenshot.ts): `nlb dashboard` started as the
// built binary, its page opened in Debian's chromium (headless, driven by playwright-core), and
// what the page shows read back from its data attributes.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { type Browser, type Page, chromium } from 'playwright-core';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const chromiumPath = '/usr/bin/chromium';

/** Bundles the page again (scripts/build-web.mjs), so the page tested is the source's. */
export function buildPage(): void {
  execFileSync(process.execPath, ['scripts/build-web.mjs'], { cwd: repoRoot, stdio: 'pipe' });
}

export interface DashboardProcess {
  readonly url: string;
  readonly child: ChildProcess;
  /** What it wrote to stderr so far. */
  stderr(): string;
  stop(): Promise<void>;
}

/**
 * Starts `node dist/cli/main.js <args>` (`dashboard ...` or `demo --dashboard ...`) and resolves
 * with the dashboard's URL once it prints it (`http://127.0.0.1:PORT/`).
 */
export function startDashboardProcess(
  args: readonly string[],
  onLine: (line: string) => void = () => undefined,
  waitMs = 60_000,
): Promise<DashboardProcess> {
  const child = spawn(process.execPath, ['dist/cli/main.js', ...args], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`no dashboard URL within ${waitMs} ms:\n${stdout}\n${stderr}`));
    }, waitMs);
    const look = (chunk: string, into: 'stdout' | 'stderr'): void => {
      if (into === 'stdout') stdout += chunk;
      else stderr += chunk;
      for (const line of chunk.split('\n')) if (line !== '') onLine(line);
      const url = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(stdout + stderr)?.[1];
      if (url !== undefined) {
        clearTimeout(timer);
        resolve({ url, child, stderr: () => stderr, stop });
      }
    };
    child.stdout.setEncoding('utf8').on('data', (c: string) => look(c, 'stdout'));
    child.stderr.setEncoding('utf8').on('data', (c: string) => look(c, 'stderr'));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`nlb exited (${code}) before serving the dashboard:\n${stdout}\n${stderr}`));
    });
  });
}

export interface OpenPage {
  readonly browser: Browser;
  readonly page: Page;
  /** Console errors and uncaught exceptions of the page so far. */
  readonly errors: string[];
  close(): Promise<void>;
}

export async function openDashboard(url: string, width = 1400, height = 1000): Promise<OpenPage> {
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox'],
  });
  const page = await browser.newPage({ viewport: { width, height } });
  const errors: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => errors.push(`page error: ${error.message}`));
  await page.goto(url);
  await page.waitForSelector('[data-testid=bucket]', { timeout: 10_000 });
  return { browser, page, errors, close: () => browser.close() };
}

/** The owner of each bucket of `rule` as the grid shows it ('none' for nobody). */
export function gridOwners(page: Page, rule = 0): Promise<string[]> {
  return page.$$eval(`[data-testid=bucket][data-rule="${rule}"]`, (cells) =>
    cells.map((cell) => cell.getAttribute('data-owner') ?? '?'),
  );
}

/** The health of each host row: host id → health. */
export async function hostHealth(page: Page): Promise<Record<string, string>> {
  return page.$$eval('[data-testid=host]', (rows) =>
    Object.fromEntries(
      rows.map((row) => [row.getAttribute('data-host'), row.getAttribute('data-health')]),
    ),
  );
}

/** Clicks a host's action button, checks the confirmation names it, and confirms. */
export async function actOnHost(page: Page, action: string, hostId: number): Promise<string> {
  await page.click(`[data-testid="action-${action}"][data-host="${hostId}"]`);
  const dialog = page.locator('[data-testid=confirm-dialog]');
  await dialog.waitFor({ timeout: 2_000 });
  const text = await dialog.innerText();
  await page.click('[data-testid=confirm-ok]');
  return text;
}

/** The message the page shows after an action, once it shows one. */
export async function actionMessage(page: Page): Promise<{ ok: boolean; text: string }> {
  const message = page.locator('[data-testid=action-message]');
  await message.waitFor({ timeout: 5_000 });
  return {
    ok: (await message.getAttribute('data-ok')) === 'true',
    text: await message.innerText(),
  };
}
