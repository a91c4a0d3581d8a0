/**
 * A small line-chart renderer for the examples, without a plotting dependency: panels with axes,
 * ticks, tick labels, a title and a legend, drawn into an RGB buffer (write it with
 * `writePng(path, rgb, width, height, 3)`). Text uses a 3x5 pixel font (upper case, digits and
 * a little punctuation), scaled up.
 */

/** An RGB colour, 0-255 per channel. */
export type Rgb = [number, number, number];

/** One line of a panel. */
export interface Series {
  label: string;
  color: Rgb;
  points: [number, number][];
}

/** One chart. */
export interface Panel {
  title: string;
  xLabel: string;
  xTicks: number[];
  yTicks: number[];
  /** Formats tick labels (default: the number as given). */
  xFormat?: (v: number) => string;
  yFormat?: (v: number) => string;
  series: Series[];
}

// Rows of three pixels, top to bottom.
const FONT: Record<string, string> = {
  "0": "111101101101111",
  "1": "010110010010111",
  "2": "111001111100111",
  "3": "111001111001111",
  "4": "101101111001001",
  "5": "111100111001111",
  "6": "111100111101111",
  "7": "111001001001001",
  "8": "111101111101111",
  "9": "111101111001111",
  ".": "000000000000010",
  "-": "000000111000000",
  "%": "101001010100101",
  "(": "010100100100010",
  ")": "010001001001010",
  "=": "000111000111000",
  ",": "000000000010100",
  ":": "000010000010000",
  "/": "001001010100100",
  " ": "000000000000000",
  A: "010101111101101",
  B: "110101110101110",
  C: "011100100100011",
  D: "110101101101110",
  E: "111100110100111",
  F: "111100110100100",
  G: "011100101101011",
  H: "101101111101101",
  I: "111010010010111",
  J: "001001001101010",
  K: "101101110101101",
  L: "100100100100111",
  M: "101111111101101",
  N: "110101101101101",
  O: "010101101101010",
  P: "110101110100100",
  Q: "010101101110011",
  R: "110101110101101",
  S: "011100010001110",
  T: "111010010010010",
  U: "101101101101111",
  V: "101101101101010",
  W: "101101111111101",
  X: "101101010101101",
  Y: "101101010010010",
  Z: "111001010100111",
};

/** An RGB canvas with the drawing primitives the charts need. */
export class Canvas {
  readonly rgb: Uint8Array;
  constructor(
    readonly width: number,
    readonly height: number,
  ) {
    this.rgb = new Uint8Array(width * height * 3).fill(255);
  }

  /** Fills the rectangle `[x, x + w) x [y, y + h)`, clipped to the canvas. */
  fill(x: number, y: number, w: number, h: number, c: Rgb): void {
    for (let yy = Math.max(0, Math.round(y)); yy < Math.min(this.height, Math.round(y + h)); yy++) {
      for (let xx = Math.max(0, Math.round(x)); xx < Math.min(this.width, Math.round(x + w)); xx++) {
        const p = (yy * this.width + xx) * 3;
        this.rgb[p] = c[0];
        this.rgb[p + 1] = c[1];
        this.rgb[p + 2] = c[2];
      }
    }
  }

  /** A line `thickness` pixels wide (square brush stepped along the segment). */
  line(x0: number, y0: number, x1: number, y1: number, c: Rgb, thickness = 1): void {
    const n = Math.max(1, Math.ceil(Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0))));
    const h = (thickness - 1) / 2;
    for (let i = 0; i <= n; i++) {
      const t = i / n;
      this.fill(x0 + (x1 - x0) * t - h, y0 + (y1 - y0) * t - h, thickness, thickness, c);
    }
  }

  /** Pixel width of `text` at `scale`. */
  static textWidth(text: string, scale: number): number {
    return text.length * 4 * scale - scale;
  }

  /** Draws `text` (upper-cased) with its top-left corner at (x, y); unknown characters are blank. */
  text(text: string, x: number, y: number, c: Rgb, scale = 2): void {
    let cx = Math.round(x);
    for (const ch of text.toUpperCase()) {
      const glyph = FONT[ch] ?? FONT[" "];
      for (let r = 0; r < 5; r++) {
        for (let k = 0; k < 3; k++) {
          if (glyph[r * 3 + k] === "1") this.fill(cx + k * scale, y + r * scale, scale, scale, c);
        }
      }
      cx += 4 * scale;
    }
  }
}

const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [225, 225, 225];

/**
 * Draws `panels` side by side, each `panelWidth` x `panelHeight` pixels; the axes span the first
 * and last ticks.
 */
export function lineCharts(
  panels: Panel[],
  { panelWidth = 480, panelHeight = 360 }: { panelWidth?: number; panelHeight?: number } = {},
): Canvas {
  const canvas = new Canvas(panelWidth * panels.length, panelHeight);
  const [left, right, top, bottom] = [64, 28, 62, 50];
  panels.forEach((panel, i) => {
    const ox = i * panelWidth;
    const [x0, x1] = [panel.xTicks[0], panel.xTicks[panel.xTicks.length - 1]];
    const [y0, y1] = [panel.yTicks[0], panel.yTicks[panel.yTicks.length - 1]];
    const plotW = panelWidth - left - right;
    const plotH = panelHeight - top - bottom;
    const px = (v: number) => ox + left + ((v - x0) / (x1 - x0)) * plotW;
    const py = (v: number) => top + plotH - ((v - y0) / (y1 - y0)) * plotH;
    const xf = panel.xFormat ?? String;
    const yf = panel.yFormat ?? String;
    canvas.text(panel.title, ox + left + (plotW - Canvas.textWidth(panel.title, 2)) / 2, 8, BLACK, 2);
    // Legend under the title: a short line in each series' colour, then its label.
    let lx = ox + left;
    for (const s of panel.series) {
      canvas.line(lx, 34, lx + 18, 34, s.color, 3);
      canvas.text(s.label, lx + 24, 30, BLACK, 2);
      lx += 24 + Canvas.textWidth(s.label, 2) + 20;
    }
    for (const t of panel.yTicks) {
      canvas.line(ox + left, py(t), ox + left + plotW, py(t), GRID);
      canvas.line(ox + left - 5, py(t), ox + left, py(t), BLACK);
      const label = yf(t);
      canvas.text(label, ox + left - 8 - Canvas.textWidth(label, 2), py(t) - 5, BLACK, 2);
    }
    for (const t of panel.xTicks) {
      canvas.line(px(t), top, px(t), top + plotH, GRID);
      canvas.line(px(t), top + plotH, px(t), top + plotH + 5, BLACK);
      const label = xf(t);
      canvas.text(label, px(t) - Canvas.textWidth(label, 2) / 2, top + plotH + 9, BLACK, 2);
    }
    canvas.line(ox + left, top, ox + left, top + plotH, BLACK, 2);
    canvas.line(ox + left, top + plotH, ox + left + plotW, top + plotH, BLACK, 2);
    canvas.text(panel.xLabel, ox + left + (plotW - Canvas.textWidth(panel.xLabel, 2)) / 2, panelHeight - 18, BLACK, 2);
    for (const s of panel.series) {
      for (let k = 1; k < s.points.length; k++) {
        const [a, b] = [s.points[k - 1], s.points[k]];
        canvas.line(px(a[0]), py(a[1]), px(b[0]), py(b[1]), s.color, 3);
      }
      for (const [x, y] of s.points) canvas.fill(px(x) - 4, py(y) - 4, 9, 9, s.color);
    }
  });
  return canvas;
}
