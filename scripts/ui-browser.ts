// A link xp printed, opened as a user opens it: headless Chromium (Debian's `chromium`, driven by playwright-core; no
// browser is downloaded) with a new, empty profile, no script run in the page and nothing clicked. What the page
// then shows is read back from it for the browser tests (test/ui/) and photographed for the README
// (scripts/screenshot-ui.ts): both see the same page.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

/** XP_CHROMIUM, else Debian's and Ubuntu's names for it. */
export function chromiumPath(): string {
  const candidates = [process.env.XP_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter(
    (c): c is string => Boolean(c),
  );
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found)
    throw new Error(
      `no Chromium at ${candidates.join(' or ')}: install it (Debian: apt-get install chromium) or set XP_CHROMIUM`,
    );
  return found;
}

export interface Viewport {
  width: number;
  height: number;
}

export interface FreshPage {
  page: Page;
  close(): Promise<void>;
}

/** `url` in a browser with a profile of its own, created empty for it and removed on close. */
export async function openInFreshProfile(url: string, viewport: Viewport): Promise<FreshPage> {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'xp-chromium-'));
  let context: BrowserContext | undefined;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: chromiumPath(),
      headless: true,
      viewport,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(url);
    const opened = context;
    return {
      page,
      async close() {
        await opened.close();
        // Chromium's helpers may still be writing to the profile for a moment.
        fs.rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
      },
    };
  } catch (error) {
    await context?.close();
    fs.rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
    throw error;
  }
}

// What runs in the page is given as source text: tsx (esbuild) would wrap functions written here in a helper that
// exists only in Node.

/**
 * Waits until every one of `texts` is on the page (its text or its charts' labels), then for charts to finish
 * drawing. MLflow's pages keep polling, so there is no network quiet to wait for.
 */
export async function untilShown(page: Page, texts: string[], timeoutMs = 90_000): Promise<void> {
  await page.waitForFunction(
    `((wanted) => {
      const labels = [...document.querySelectorAll('svg text')].map((t) => t.textContent).join('\\n');
      const shown = document.body.innerText + '\\n' + labels;
      return wanted.every((text) => shown.includes(text));
    })(${JSON.stringify(texts)})`,
    undefined,
    { timeout: timeoutMs, polling: 250 },
  );
  // Charts animate in; plots redraw once their data settles.
  await page.waitForTimeout(1500);
}

export interface Box {
  left: number;
  top: number;
  right: number;
  bottom: number;
}

/** What a page shows, read from it. */
export interface PageFacts {
  url: string;
  /** The text on the page, as rendered. */
  text: string;
  /** The UI's navigation: the experiment's pages on the side of the GenAI / Model training toggle it is on. */
  sideNav: string;
  /** The page's own content (MLflow's main region). */
  main?: Box;
  /** MLflow's Assistant panel, when it is open. */
  assistant?: Box;
  /** Dialogs, pop-ups and tooltips on screen. */
  overlays: string[];
}

export async function pageFacts(page: Page): Promise<PageFacts> {
  return page.evaluate(`(() => {
    const box = (element) => {
      if (!element) return undefined;
      const r = element.getBoundingClientRect();
      return r.width > 0 && r.height > 0 ? { left: r.left, top: r.top, right: r.right, bottom: r.bottom } : undefined;
    };
    const visible = (element) => {
      const style = getComputedStyle(element);
      return box(element) !== undefined && style.visibility !== 'hidden' && style.opacity !== '0';
    };
    const overlays = [
      ...document.querySelectorAll(
        '[role=dialog], [role=alertdialog], [role=tooltip], .du-bois-light-popover, [data-radix-popper-content-wrapper]',
      ),
    ]
      .filter(visible)
      .map((element) => element.innerText.trim().slice(0, 120) || element.outerHTML.slice(0, 120));
    const assistant = [...document.querySelectorAll('[data-assistant-ui]')].find(
      (element) => visible(element) && box(element).bottom - box(element).top > 200,
    );
    return {
      url: location.href,
      text: document.body.innerText,
      sideNav: document.querySelector('aside')?.innerText ?? '',
      main: box(document.querySelector('main')),
      assistant: box(assistant),
      overlays,
    };
  })()`);
}

/** Whether `text` is on screen and nothing is drawn over it: the topmost element at its middle is its own. */
export async function uncovered(page: Page, text: string): Promise<boolean> {
  return page.evaluate(`((wanted) => {
    // The elements that hold the text themselves (in a text node of their own).
    const candidates = [...document.querySelectorAll('body *')].filter(
      (element) =>
        [...element.childNodes].some((node) => node.nodeType === Node.TEXT_NODE && node.textContent.includes(wanted)) &&
        element.getBoundingClientRect().width > 0,
    );
    return candidates.some((element) => {
      const r = element.getBoundingClientRect();
      const x = r.left + r.width / 2;
      const y = r.top + r.height / 2;
      if (x < 0 || y < 0 || x > innerWidth || y > innerHeight) return false;
      const top = document.elementFromPoint(x, y);
      return top !== null && (element === top || element.contains(top) || top.contains(element));
    });
  })(${JSON.stringify(text)})`);
}

/** The labels drawn in the chart card whose title (its first line of text) is `title`. */
export async function chartLabels(page: Page, title: string): Promise<string[]> {
  return page.evaluate(`((wanted) => {
    const cards = [...document.querySelectorAll('div')].filter(
      (element) => element.querySelector('svg text') !== null && element.innerText.split('\\n')[0].trim() === wanted,
    );
    // The innermost element whose first line is the title and that holds a chart: the card (a row of cards holds
    // them all, and its first line is its first card's title).
    const card = cards.find((element) => !cards.some((other) => other !== element && element.contains(other)));
    return card ? [...card.querySelectorAll('svg text')].map((t) => t.textContent ?? '') : [];
  })(${JSON.stringify(title)})`);
}

/** Whether two boxes share any area. */
export const overlap = (a: Box, b: Box): boolean =>
  a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
