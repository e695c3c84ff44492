//! Small SVG plots for reports: a heatmap of per-(layer, neuron) scores.

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

#[cfg(test)]
mod tests {
    #[test]
    fn heatmap_has_one_cell_per_value_and_scales_to_the_range() {
        let svg = super::heatmap("t <x>", &["a".into(), "b".into()], &[0.0, 1.0, f64::NAN, 2.0], 2, "neuron");
        assert_eq!(svg.matches("<rect").count(), 4 + 100);
        assert!(svg.contains("t &lt;x&gt;") && svg.contains("#999999") && svg.contains("#440154") && svg.contains("#fde725"));
    }
}
