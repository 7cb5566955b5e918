//! Small SVG charts for the benchmark report: grouped bars over named
//! categories (frame sizes, cases), one colour per series, a value axis
//! with round ticks and a legend. Missing values are left out.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

const COLOURS: [&str; 6] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 420.0;
/// Margins: the value axis on the left, the legend on the right.
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// A step of 1, 2 or 5 times a power of ten giving about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let rough = max / 5.0;
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * power).find(|s| *s >= rough).unwrap_or(10.0 * power)
}

fn label(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", v / 1e6),
        v if v >= 1e3 => format!("{}k", v / 1e3),
        v => format!("{v}"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Grouped bars: one group per category, one bar per series.
pub fn bars(title: &str, categories: &[String], y_label: &str, series: &[Series]) -> String {
    let max = series.iter().flat_map(|s| s.values.iter().flatten()).fold(0.0f64, |m, &v| m.max(v));
    let step = tick_step(if max > 0.0 { max } else { 1.0 });
    let top = (max / step).ceil().max(1.0) * step;
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let y = |v: f64| TOP + plot_h * (1.0 - v / top);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    let mut tick = 0.0;
    while tick <= top + step / 2.0 {
        let (right, at, text_x, text) = (LEFT + plot_w, y(tick), LEFT - 6.0, label(tick));
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{right}" y1="{at:.1}" y2="{at:.1}" stroke="#ddd"/><text x="{text_x}" y="{:.1}" text-anchor="end">{text}</text>"##,
            at + 4.0
        );
        tick += step;
    }
    let _ = write!(svg, r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>"#, TOP + plot_h / 2.0, escape(y_label));
    let group_w = plot_w / categories.len().max(1) as f64;
    let bar_w = group_w * 0.8 / series.len().max(1) as f64;
    for (c, category) in categories.iter().enumerate() {
        let x0 = LEFT + group_w * c as f64 + group_w * 0.1;
        let _ = write!(svg, r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#, x0 + group_w * 0.4, TOP + plot_h + 18.0, escape(category));
        for (s, series) in series.iter().enumerate() {
            if let Some(v) = series.values.get(c).copied().flatten() {
                let _ = write!(
                    svg,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                    x0 + bar_w * s as f64,
                    y(v),
                    bar_w * 0.95,
                    (TOP + plot_h - y(v)).max(0.0),
                    COLOURS[s % COLOURS.len()],
                    escape(&series.name),
                    label(v.round())
                );
            }
        }
    }
    let (right, base) = (LEFT + plot_w, TOP + plot_h);
    let _ = write!(svg, r##"<line x1="{LEFT}" x2="{right}" y1="{base}" y2="{base}" stroke="#333"/>"##);
    for (s, series) in series.iter().enumerate() {
        let ly = TOP + 10.0 + 20.0 * s as f64;
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            WIDTH - RIGHT + 16.0,
            ly,
            COLOURS[s % COLOURS.len()],
            WIDTH - RIGHT + 34.0,
            ly + 10.0,
            escape(&series.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_bars_scale() {
        assert_eq!(tick_step(1000.0), 200.0);
        assert_eq!(tick_step(7.3e6), 2e6);
        assert_eq!(label(2e6), "2M");
        let svg = bars("t<1>", &["64".into(), "1400".into()], "pps", &[Series { name: "a".into(), values: vec![Some(100.0), None] }, Series { name: "b".into(), values: vec![Some(50.0), Some(25.0)] }]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<rect x=").count(), 3 + 2, "three bars and two legend keys");
        assert!(svg.contains("t&lt;1&gt;"));
    }
}
