/**
 * benches/RESULTS.md holds one section per bench script, each between its own HTML-comment
 * markers, so `npm run bench` and `npm run bench:models` can each rewrite their part and keep
 * the other's.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";

export const RESULTS = "benches/RESULTS.md";
const TITLE = "# Benchmark results\n\n";

/** Replaces (or appends) the section named `name`; `body` is its markdown without markers. */
export function writeSection(name: string, body: string): void {
  const begin = `<!-- ${name} -->`;
  const end = `<!-- /${name} -->`;
  const section = `${begin}\n${body.trim()}\n${end}`;
  const previous = existsSync(RESULTS) ? readFileSync(RESULTS, "utf8") : "";
  const from = previous.indexOf(begin);
  const to = previous.indexOf(end, from);
  let md: string;
  if (from >= 0 && to >= 0) {
    md = previous.slice(0, from) + section + previous.slice(to + end.length);
  } else if (previous.trim() === "") {
    md = `${TITLE}${section}\n`;
  } else if (name === "run2" && previous.startsWith(TITLE)) {
    // The foundation table goes first.
    md = `${TITLE}${section}\n\n${previous.slice(TITLE.length)}`;
  } else {
    md = `${previous.trimEnd()}\n\n${section}\n`;
  }
  // Write-then-rename: an interrupted run never leaves half a file behind.
  writeFileSync(`${RESULTS}.tmp`, md);
  renameSync(`${RESULTS}.tmp`, RESULTS);
}
