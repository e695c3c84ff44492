//! Small SVG plots for reports: a heatmap of per-(layer, neuron) scores, and x/y charts (lines,
//! labelled points, grouped bars) on one shared frame.

/// A colour on a perceptual sequential ramp (approximating viridis) for t ∈ [0, 1].
fn ramp(t: f64) -> String {
    const STOPS: [(f64, [u8; 3]); 5] = [(0.0, [68, 1, 84]), (0.25, [59, 82, 139]), (0.5, [33, 145, 140]), (0.75, [94, 201, 98]), (1.0, [253, 231, 37])];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let i = STOPS.iter().rposition(|s| s.0 <= t).unwrap_or(0).min(STOPS.len() - 2);
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let f = (t - a.0) / (b.0 - a.0);
    let c: Vec<u8> = (0..3).map(|k| (a.1[k] as f64 + f * (b.1[k] as f64 - a.1[k] as f64)).round() as u8).collect();
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Rows × columns of values as coloured cells (row labels on the left, a colour bar below), scaled
/// from the minimum to the maximum finite value. NaN cells are grey.
pub fn heatmap(title: &str, row_labels: &[String], values: &[f64], cols: usize, col_label: &str) -> String {
    let rows = row_labels.len();
    assert_eq!(values.len(), rows * cols);
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let lo = finite.clone().fold(f64::INFINITY, f64::min);
    let hi = finite.fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let cell_w = (900.0 / cols.max(1) as f64).clamp(1.0, 24.0);
    let cell_h = 22.0;
    let (left, top) = (70.0, 36.0);
    let width = left + cell_w * cols as f64 + 20.0;
    let height = top + cell_h * rows as f64 + 70.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"{left}\" y=\"20\" font-size=\"14\">{}</text>\n",
        escape(title)
    );
    for (r, label) in row_labels.iter().enumerate() {
        let y = top + r as f64 * cell_h;
        s += &format!("<text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n", left - 6.0, y + cell_h * 0.7, escape(label));
        for c in 0..cols {
            let v = values[r * cols + c];
            let fill = if v.is_finite() { ramp((v - lo) / span) } else { "#999999".to_string() };
            s += &format!("<rect x=\"{:.2}\" y=\"{y:.1}\" width=\"{:.2}\" height=\"{cell_h}\" fill=\"{fill}\"/>\n", left + c as f64 * cell_w, cell_w + 0.05);
        }
    }
    let yb = top + rows as f64 * cell_h + 14.0;
    s += &format!("<text x=\"{left}\" y=\"{:.1}\">{} 0 … {}</text>\n", yb + 2.0, escape(col_label), cols.saturating_sub(1));
    for i in 0..100 {
        s += &format!("<rect x=\"{:.1}\" y=\"{:.1}\" width=\"2.1\" height=\"10\" fill=\"{}\"/>\n", left + 2.0 * i as f64, yb + 12.0, ramp(i as f64 / 99.0));
    }
    s += &format!(
        "<text x=\"{left}\" y=\"{:.1}\">{lo:.3e}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{hi:.3e}</text>\n</svg>\n",
        yb + 38.0,
        left + 200.0,
        yb + 38.0
    );
    s
}

/// Distinct series colours (colour-blind friendly, Okabe–Ito).
const SERIES: [&str; 7] = ["#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#000000"];

/// A plot frame: title, axes with ticks and labels, and a mapping from data to pixels.
struct Frame {
    svg: String,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

const W: f64 = 720.0;
const H: f64 = 420.0;
/// Margins: left (y ticks), right (legend), top (title), bottom (x ticks).
const L: f64 = 70.0;
const R: f64 = 170.0;
const T: f64 = 40.0;
const B: f64 = 50.0;

impl Frame {
    /// `x`/`y` ranges are padded when empty or degenerate; `x_ticks` replaces numeric x ticks by labels.
    fn new(title: &str, xlabel: &str, ylabel: &str, (x0, x1): (f64, f64), (y0, y1): (f64, f64), x_ticks: Option<&[String]>) -> Frame {
        let fix = |a: f64, b: f64| if !(a.is_finite() && b.is_finite()) { (0.0, 1.0) } else if b > a { (a, b) } else { (a - 0.5, a + 0.5) };
        let ((x0, x1), (y0, y1)) = (fix(x0, x1), fix(y0, y1));
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <text x=\"{L}\" y=\"22\" font-size=\"14\">{}</text>\n\
             <rect x=\"{L}\" y=\"{T}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
             <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>\n",
            escape(title),
            W - L - R,
            H - T - B,
            L + (W - L - R) / 2.0,
            H - 12.0,
            escape(xlabel),
            T + (H - T - B) / 2.0,
            T + (H - T - B) / 2.0,
            escape(ylabel)
        );
        let f = Frame { svg: String::new(), x0, x1, y0, y1 };
        for i in 0..=4 {
            let v = y0 + (y1 - y0) * i as f64 / 4.0;
            svg += &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n", L - 6.0, f.py(v) + 4.0, tick(v));
        }
        match x_ticks {
            Some(labels) => {
                for (i, l) in labels.iter().enumerate() {
                    svg += &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n", f.px(i as f64), H - B + 16.0, escape(l));
                }
            }
            None => {
                for i in 0..=4 {
                    let v = x0 + (x1 - x0) * i as f64 / 4.0;
                    svg += &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n", f.px(v), H - B + 16.0, tick(v));
                }
            }
        }
        Frame { svg, ..f }
    }
    fn px(&self, x: f64) -> f64 {
        L + (x - self.x0) / (self.x1 - self.x0) * (W - L - R)
    }
    fn py(&self, y: f64) -> f64 {
        H - B - (y - self.y0) / (self.y1 - self.y0) * (H - T - B)
    }
    fn legend(&mut self, i: usize, name: &str) {
        let y = T + 10.0 + 18.0 * i as f64;
        self.svg += &format!(
            "<rect x=\"{:.0}\" y=\"{:.0}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{:.0}\" y=\"{:.0}\">{}</text>\n",
            W - R + 12.0,
            y - 10.0,
            SERIES[i % SERIES.len()],
            W - R + 30.0,
            y,
            escape(name)
        );
    }
    fn finish(self) -> String {
        self.svg + "</svg>\n"
    }
}

fn tick(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e5) { format!("{v:.1e}") } else { format!("{}", (v * 1000.0).round() / 1000.0) }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
}

/// Line series over a shared x axis: (name, points).
pub fn lines(title: &str, xlabel: &str, ylabel: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let pts = || series.iter().flat_map(|(_, p)| p.iter().copied());
    let (lo, hi) = range(pts().map(|p| p.1));
    let mut f = Frame::new(title, xlabel, ylabel, range(pts().map(|p| p.0)), (lo.min(0.0), hi), None);
    for (i, (name, p)) in series.iter().enumerate() {
        let path: Vec<String> = p.iter().filter(|q| q.0.is_finite() && q.1.is_finite()).map(|&(x, y)| format!("{:.1},{:.1}", f.px(x), f.py(y))).collect();
        f.svg += &format!("<polyline fill=\"none\" stroke-width=\"2\" stroke=\"{}\" points=\"{}\"/>\n", SERIES[i % SERIES.len()], path.join(" "));
        f.legend(i, name);
    }
    f.finish()
}

/// Labelled points (x, y, label).
pub fn scatter(title: &str, xlabel: &str, ylabel: &str, points: &[(f64, f64, String)]) -> String {
    let (x0, x1) = range(points.iter().map(|p| p.0));
    let (y0, y1) = range(points.iter().map(|p| p.1));
    let mut f = Frame::new(title, xlabel, ylabel, (x0, x1), (y0.min(0.0), y1), None);
    for (x, y, label) in points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()) {
        let (px, py) = (f.px(*x), f.py(*y));
        f.svg += &format!("<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"{}\"><title>{}</title></circle>\n", SERIES[0], escape(label));
    }
    f.finish()
}

/// Grouped bars: one group per label, one bar per series (name, value per group).
pub fn grouped_bars(title: &str, ylabel: &str, groups: &[String], series: &[(String, Vec<f64>)]) -> String {
    let (_, hi) = range(series.iter().flat_map(|(_, v)| v.iter().copied()));
    let mut f = Frame::new(title, "", ylabel, (-0.5, groups.len() as f64 - 0.5), (0.0, hi.max(1e-9)), Some(groups));
    let slot = (f.px(1.0) - f.px(0.0)) * 0.8 / series.len().max(1) as f64;
    for (i, (name, values)) in series.iter().enumerate() {
        for (g, &v) in values.iter().enumerate().filter(|(_, v)| v.is_finite()) {
            let x = f.px(g as f64) - slot * series.len() as f64 / 2.0 + slot * i as f64;
            let (y, base) = (f.py(v.max(0.0)), f.py(0.0));
            f.svg += &format!("<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: {v:.3}</title></rect>\n", slot * 0.95, base - y, SERIES[i % SERIES.len()], escape(name), escape(&groups[g]));
        }
        f.legend(i, name);
    }
    f.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn heatmap_has_one_cell_per_value_and_scales_to_the_range() {
        let svg = super::heatmap("t <x>", &["a".into(), "b".into()], &[0.0, 1.0, f64::NAN, 2.0], 2, "neuron");
        assert_eq!(svg.matches("<rect").count(), 4 + 100);
        assert!(svg.contains("t &lt;x&gt;") && svg.contains("#999999") && svg.contains("#440154") && svg.contains("#fde725"));
    }

    #[test]
    fn charts_draw_every_point_series_and_bar() {
        let l = super::lines("m", "epoch", "%", &[("a".into(), vec![(0.0, 1.0), (1.0, 2.0), (2.0, f64::NAN)]), ("b".into(), vec![(0.0, 0.0)])]);
        assert_eq!(l.matches("<polyline").count(), 2);
        assert_eq!(l.matches(" points=\"").count(), 2);
        let s = super::scatter("s", "x", "y", &[(1.0, 2.0, "p<1>".into()), (1.0, 2.0, "q".into()), (f64::NAN, 0.0, "skip".into())]);
        assert_eq!(s.matches("<circle").count(), 2);
        assert!(s.contains("p&lt;1&gt;"));
        let b = super::grouped_bars("b", "%", &["x".into(), "y".into(), "z".into()], &[("before".into(), vec![1.0, 2.0, 3.0]), ("after".into(), vec![0.0, f64::NAN, 1.0])]);
        assert_eq!(b.matches("<rect").count(), 1 + 5 + 2, "frame + 5 finite bars + 2 legend keys");
        for svg in [l, s, b] {
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        }
    }
}
