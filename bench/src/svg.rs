//! A horizontal bar chart as a standalone SVG file, for the report's
//! throughput plot. Hand-written because it is one chart shape, and a
//! plotting crate would pull in fonts and a rasterizer to draw it.

use std::fmt::Write as _;

use crate::{Summary, short};

/// Bars of one configuration, one per series (missing ones are left out).
pub struct Group {
    pub label: String,
    pub bars: Vec<(usize, Summary)>,
}

/// A chart area with its own scale: numbers from the emulated kernel VM
/// would vanish next to the host's on a shared axis.
pub struct Panel {
    pub title: String,
    pub unit: String,
    pub groups: Vec<Group>,
}

const WIDTH: f64 = 860.0;
const LABEL_WIDTH: f64 = 250.0;
const BAR_HEIGHT: f64 = 14.0;
const GROUP_GAP: f64 = 10.0;
const PANEL_HEAD: f64 = 44.0;
const COLORS: [&str; 4] = ["#4878cf", "#6acc65", "#d65f5f", "#b47cc7"];

/// The chart: `series` names the bars of each group (and picks their
/// colours, in order); each bar is drawn at its median with a line from
/// its min to its max.
pub fn bar_chart(title: &str, series: &[&str], panels: &[Panel]) -> String {
    let plot_width = WIDTH - LABEL_WIDTH - 80.0;
    let mut body = String::new();
    let mut y = 50.0;
    for panel in panels {
        let top = panel_title(&mut body, panel, y);
        let scale_max = panel
            .groups
            .iter()
            .flat_map(|g| g.bars.iter().map(|(_, s)| s.max.max(s.median)))
            .fold(0.0, f64::max);
        let (scale, ticks) = nice_scale(scale_max);
        axis(&mut body, top, panel, (scale, ticks), plot_width);
        let mut gy = top + 6.0;
        for group in &panel.groups {
            let height = group.bars.len().max(1) as f64 * BAR_HEIGHT;
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" class="label">{}</text>"#,
                LABEL_WIDTH - 8.0,
                gy + height / 2.0 + 4.0,
                escape(&group.label)
            );
            for (i, (s, value)) in group.bars.iter().enumerate() {
                let by = gy + i as f64 * BAR_HEIGHT;
                let w = |v: f64| v / scale * plot_width;
                let _ = writeln!(
                    body,
                    r#"<rect x="{LABEL_WIDTH}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {} {}</title></rect>"#,
                    w(value.median),
                    BAR_HEIGHT - 2.0,
                    COLORS[s % COLORS.len()],
                    escape(series.get(*s).unwrap_or(&"?")),
                    value,
                    escape(&panel.unit)
                );
                let mid = by + (BAR_HEIGHT - 2.0) / 2.0;
                let _ = writeln!(
                    body,
                    r#"<line x1="{:.1}" x2="{:.1}" y1="{mid:.1}" y2="{mid:.1}" class="range"/>"#,
                    LABEL_WIDTH + w(value.min),
                    LABEL_WIDTH + w(value.max),
                );
                let _ = writeln!(
                    body,
                    r#"<text x="{:.1}" y="{:.1}" class="value">{}</text>"#,
                    LABEL_WIDTH + w(value.max.max(value.median)) + 4.0,
                    mid + 4.0,
                    short(value.median)
                );
            }
            gy += height + GROUP_GAP;
        }
        y = gy + 20.0;
    }
    let mut legend = String::new();
    for (i, name) in series.iter().enumerate() {
        let x = LABEL_WIDTH + i as f64 * 150.0;
        let _ = writeln!(
            legend,
            r#"<rect x="{x}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}" class="label">{}</text>"#,
            y - 6.0,
            COLORS[i % COLORS.len()],
            x + 16.0,
            y + 4.0,
            escape(name)
        );
    }
    let height = y + 20.0;
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif">
<style>.label {{ font-size: 12px; fill: #222; }} .value {{ font-size: 11px; fill: #444; }} .title {{ font-size: 15px; font-weight: bold; }} .panel {{ font-size: 13px; font-weight: bold; }} .grid {{ stroke: #ddd; }} .range {{ stroke: #222; stroke-width: 1.5; }}</style>
<rect width="100%" height="100%" fill="white"/>
<text x="12" y="24" class="title">{}</text>
{body}{legend}</svg>
"#,
        escape(title)
    )
}

fn panel_title(body: &mut String, panel: &Panel, y: f64) -> f64 {
    let _ = writeln!(
        body,
        r#"<text x="12" y="{:.1}" class="panel">{}</text>"#,
        y + 6.0,
        escape(&panel.title)
    );
    y + PANEL_HEAD - 20.0
}

/// Grid lines dividing the scale into `ticks` parts, labelled in the
/// panel's unit.
fn axis(body: &mut String, top: f64, panel: &Panel, (scale, ticks): (f64, u32), plot_width: f64) {
    let bottom = top
        + 6.0
        + panel
            .groups
            .iter()
            .map(|g| g.bars.len().max(1) as f64 * BAR_HEIGHT + GROUP_GAP)
            .sum::<f64>();
    for i in 0..=ticks {
        let x = LABEL_WIDTH + plot_width * f64::from(i) / f64::from(ticks);
        let _ = writeln!(
            body,
            r#"<line x1="{x:.1}" x2="{x:.1}" y1="{top:.1}" y2="{bottom:.1}" class="grid"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="value">{}{}</text>"#,
            top - 4.0,
            short(scale * f64::from(i) / f64::from(ticks)),
            if i == ticks {
                format!(" {}", escape(&panel.unit))
            } else {
                String::new()
            }
        );
    }
}

/// The scale's end: the smallest of a few round multiples of a power of
/// ten at or above `v`, with how many grid steps divide it into round
/// numbers (5.2 GB/s gets 6 in steps of 1, not 10 with half the plot
/// empty).
fn nice_scale(v: f64) -> (f64, u32) {
    if v <= 0.0 || !v.is_finite() {
        return (1.0, 5);
    }
    let power = 10f64.powf(v.log10().floor());
    [
        (1.0, 5),
        (2.0, 4),
        (2.5, 5),
        (4.0, 4),
        (5.0, 5),
        (6.0, 6),
        (8.0, 4),
    ]
    .iter()
    .map(|&(m, ticks)| (m * power, ticks))
    .find(|(c, _)| *c >= v * 0.999_999)
    .unwrap_or((10.0 * power, 5))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(median: f64, min: f64, max: f64) -> Summary {
        Summary { median, min, max }
    }

    #[test]
    fn grid_ends_on_round_numbers() {
        assert_eq!(nice_scale(3.2), (4.0, 4));
        assert_eq!(nice_scale(0.42), (0.5, 5));
        assert_eq!(nice_scale(17.0), (20.0, 4));
        assert_eq!(nice_scale(2.0), (2.0, 4));
        assert_eq!(nice_scale(5.2), (6.0, 6));
        assert_eq!(nice_scale(9.0), (10.0, 5));
        assert_eq!(nice_scale(0.0), (1.0, 5));
    }

    #[test]
    fn bars_scale_to_their_own_panel() {
        let panel = |title: &str, v: f64| Panel {
            title: title.into(),
            unit: "GB/s".into(),
            groups: vec![Group {
                label: "plain <veth>".into(),
                bars: vec![(0, s(v, v * 0.9, v)), (1, s(v / 2.0, v / 2.0, v / 2.0))],
            }],
        };
        let svg = bar_chart(
            "t & u",
            &["tcp", "udp"],
            &[panel("host", 5.0), panel("vm", 0.5)],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Each panel's biggest bar fills the plot width (530 px): same
        // length at 5 GB/s on the host and 0.5 GB/s in the VM.
        assert_eq!(svg.matches(r#"width="530.0""#).count(), 2, "{svg}");
        assert_eq!(svg.matches(r#"width="265.0""#).count(), 2, "{svg}");
        // Min-to-max line of the first bar: 90% to 100% of the width.
        assert!(svg.contains(r#"x1="727.0" x2="780.0""#), "{svg}");
        assert!(svg.contains("plain &lt;veth&gt;") && svg.contains("t &amp; u"));
        assert!(svg.contains(COLORS[0]) && svg.contains(COLORS[1]));
    }
}
