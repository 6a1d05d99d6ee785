//! The report's charts, drawn by plotters into SVG text (its SVG backend writes `<text>`
//! elements: the browser renders the fonts, nothing is fetched). Each function returns one
//! `<svg>` element; a chart with nothing to show still draws its axes and says so.

use std::collections::BTreeMap;

use plotters::coord::types::{RangedCoordi64, RangedCoordu64};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::aggregate::NS_PER_MINUTE;
use crate::time;
use crate::timeline::{Kind, Timeline};

/// Bars a time chart has at most: finer buckets would be thinner than a pixel or two.
const MAX_BUCKETS: i64 = 360;
/// Bucket widths offered, minutes.
const BUCKET_MINUTES: [i64; 12] = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440];
const WIDTH: u32 = 1000;
const FONT: &str = "sans-serif";

const CORRELATED: RGBColor = RGBColor(0x2b, 0x6c, 0xb0);
const ORPHAN: RGBColor = RGBColor(0xe0, 0x8a, 0x1e);
const BAR: RGBColor = RGBColor(0x3d, 0x8f, 0x6e);
const ALERT: RGBColor = RGBColor(0xc0, 0x39, 0x2b);
const SERIES: [RGBColor; 8] = [
    RGBColor(0x2b, 0x6c, 0xb0),
    RGBColor(0xc0, 0x39, 0x2b),
    RGBColor(0x3d, 0x8f, 0x6e),
    RGBColor(0x8e, 0x44, 0xad),
    RGBColor(0xe0, 0x8a, 0x1e),
    RGBColor(0x16, 0xa0, 0x85),
    RGBColor(0x7f, 0x8c, 0x8d),
    RGBColor(0xd3, 0x54, 0x00),
];

#[derive(Debug, thiserror::Error)]
#[error("drawing the {chart} chart: {message}")]
pub struct ChartError {
    pub chart: &'static str,
    pub message: String,
}

fn err<E: std::fmt::Debug>(chart: &'static str) -> impl Fn(E) -> ChartError {
    move |e| ChartError {
        chart,
        message: format!("{e:?}"),
    }
}

/// The bucket width (minutes) that keeps `[first, last]` minutes within [`MAX_BUCKETS`].
pub fn bucket_minutes(first: i64, last: i64) -> i64 {
    let span = last - first + 1;
    BUCKET_MINUTES
        .iter()
        .copied()
        .find(|b| span / b < MAX_BUCKETS)
        .unwrap_or(span / MAX_BUCKETS + 1)
}

fn minute_label(minute: i64, with_date: bool) -> String {
    let t = time::format_ns(minute.saturating_mul(NS_PER_MINUTE));
    // 2026-11-25T07:40:00.000000Z
    match (t.get(5..10), t.get(11..16)) {
        (Some(d), Some(h)) if with_date => format!("{d} {h}"),
        (_, Some(h)) => h.to_owned(),
        _ => t,
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// A chart over time buckets: minutes on x, counts on y.
type TimeChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordi64, RangedCoordu64>>;

/// One `<svg>` element of `size` on white, drawn by `draw`.
fn svg(
    name: &'static str,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<(), ChartError>,
) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err(name))?;
        draw(&root)?;
        root.present().map_err(err(name))?;
    }
    Ok(svg)
}

/// Headroom above the highest bar or point.
fn y_end(top: u64) -> u64 {
    top + top / 10 + 1
}

/// The buckets of width `b` minutes that cover minutes `[first, last]`.
fn bucket_range(first: i64, last: i64, b: i64) -> std::ops::Range<i64> {
    first.div_euclid(b) * b..last.div_euclid(b) * b + b
}

/// A time chart with its axes drawn: `x` minutes (labelled in UTC, with the date when the window
/// spans more than a day), 0 to above `top` on y.
fn time_chart<'a, 'b>(
    root: &'a Area<'b>,
    name: &'static str,
    caption: String,
    (first, last, b): (i64, i64, i64),
    top: u64,
    y_desc: &str,
) -> Result<TimeChart<'a, 'b>, ChartError> {
    let with_date = last - first > 24 * 60;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FONT, 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(bucket_range(first, last, b), 0u64..y_end(top))
        .map_err(err(name))?;
    chart
        .configure_mesh()
        .x_labels(10)
        .x_label_style((FONT, 12))
        .y_label_style((FONT, 12))
        .x_label_formatter(&|m| minute_label(*m, with_date))
        .x_desc("UTC")
        .y_desc(y_desc)
        .draw()
        .map_err(err(name))?;
    Ok(chart)
}

/// The legend of the series drawn, boxed, where plotters puts it unless told otherwise.
fn legend<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
    name: &'static str,
    position: Option<SeriesLabelPosition>,
) -> Result<(), ChartError> {
    let mut labels = chart.configure_series_labels();
    if let Some(p) = position {
        labels.position(p);
    }
    labels
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err(name))
}

/// Requests per bucket, correlated stacked under orphans.
pub fn requests(per_minute: &BTreeMap<i64, (u64, u64)>) -> Result<(String, i64), ChartError> {
    const NAME: &str = "requests";
    let (first, last) = match (per_minute.keys().next(), per_minute.keys().next_back()) {
        (Some(f), Some(l)) => (*f, *l),
        _ => (0, 0),
    };
    let b = bucket_minutes(first, last);
    let mut buckets: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for (m, (c, o)) in per_minute {
        let e = buckets.entry(m.div_euclid(b) * b).or_default();
        e.0 += c;
        e.1 += o;
    }
    let top = buckets
        .values()
        .map(|(c, o)| c + o)
        .max()
        .unwrap_or(0)
        .max(1);
    let caption = if per_minute.is_empty() {
        "no requests in the window".to_owned()
    } else if b == 1 {
        "requests per minute".to_owned()
    } else {
        format!("requests per {b} minutes")
    };
    svg(NAME, (WIDTH, 320), |root| {
        let mut chart = time_chart(root, NAME, caption, (first, last, b), top, "requests")?;
        chart
            .draw_series(
                buckets.iter().map(|(m, (c, _))| {
                    Rectangle::new([(*m, 0), (*m + b, *c)], CORRELATED.filled())
                }),
            )
            .map_err(err(NAME))?
            .label("correlated")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], CORRELATED.filled()));
        chart
            .draw_series(
                buckets.iter().map(|(m, (c, o))| {
                    Rectangle::new([(*m, *c), (*m + b, c + o)], ORPHAN.filled())
                }),
            )
            .map_err(err(NAME))?
            .label("orphan")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], ORPHAN.filled()));
        legend(&mut chart, NAME, None)
    })
    .map(|svg| (svg, b))
}

/// Horizontal bars: one per `(label, count)`, largest first as given.
pub fn bars(
    name: &'static str,
    caption: &str,
    items: &[(String, u64)],
    label_width: u32,
    alert: bool,
) -> Result<String, ChartError> {
    let n = items.len().max(1);
    let height = (70 + 24 * u32::try_from(n).unwrap_or(40)).max(160);
    let top = items.iter().map(|(_, c)| *c).max().unwrap_or(0).max(1);
    let labels: Vec<String> = items
        .iter()
        .map(|(l, _)| crate::query::fit(l, 60))
        .collect();
    let caption = if items.is_empty() {
        format!("{caption}: none in the window")
    } else {
        caption.to_owned()
    };
    svg(name, (WIDTH, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(caption, (FONT, 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(label_width)
            // Integer ranges are inclusive in plotters: 0..n-1 is n segments.
            .build_cartesian_2d(0u64..top + top / 8 + 1, (0..n - 1).into_segmented())
            .map_err(err(name))?;
        // The largest on top: item i in segment n-1-i.
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_style((FONT, 12))
            .x_label_style((FONT, 12))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels
                    .get(n - 1 - (*i).min(n - 1))
                    .cloned()
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(err(name))?;
        let color = if alert { ALERT } else { BAR };
        chart
            .draw_series(
                Histogram::horizontal(&chart)
                    .style(color.filled())
                    .margin(3)
                    .data(items.iter().enumerate().map(|(i, (_, c))| (n - 1 - i, *c))),
            )
            .map_err(err(name))?;
        Ok(())
    })
}

/// Lines with their TTL seen in the client's SYN: vertical bars at each TTL value.
pub fn ttl(ttl: &BTreeMap<u64, u64>) -> Result<String, ChartError> {
    const NAME: &str = "ttl";
    let top = ttl.values().copied().max().unwrap_or(0).max(1);
    let caption = if ttl.is_empty() {
        "IP TTL of the SYN: no correlated lines in the window"
    } else {
        "IP TTL of the SYN (64: Linux/macOS, 128: Windows, 255: network gear; less the hops)"
    };
    svg(NAME, (WIDTH, 300), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(caption, (FONT, 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0u64..256u64, 0u64..y_end(top))
            .map_err(err(NAME))?;
        chart
            .configure_mesh()
            .x_labels(17)
            .x_label_style((FONT, 12))
            .y_label_style((FONT, 12))
            .x_desc("ip_meta_ttl")
            .y_desc("requests")
            .draw()
            .map_err(err(NAME))?;
        chart
            .draw_series(
                ttl.iter()
                    // Three units wide: one TTL is a sliver of the 0-255 axis.
                    .map(|(t, c)| {
                        Rectangle::new(
                            [(t.saturating_sub(1), 0), (*t + 2, *c)],
                            CORRELATED.filled(),
                        )
                    }),
            )
            .map_err(err(NAME))?;
        Ok(())
    })
}

/// Events per bucket, one line per rule (the eight rules with most events; the others summed).
pub fn events(per_rule: &BTreeMap<String, BTreeMap<i64, u64>>) -> Result<String, ChartError> {
    const NAME: &str = "events";
    let first = per_rule
        .values()
        .filter_map(|m| m.keys().next())
        .min()
        .copied();
    let last = per_rule
        .values()
        .filter_map(|m| m.keys().next_back())
        .max()
        .copied();
    let (first, last) = (first.unwrap_or(0), last.unwrap_or(0));
    let b = bucket_minutes(first, last);
    let mut totals: Vec<(&String, u64)> = per_rule
        .iter()
        .map(|(r, m)| (r, m.values().sum::<u64>()))
        .collect();
    totals.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut series: Vec<(String, BTreeMap<i64, u64>)> = Vec::new();
    let mut rest: BTreeMap<i64, u64> = BTreeMap::new();
    for (i, (rule, _)) in totals.iter().enumerate() {
        let Some(minutes) = per_rule.get(*rule) else {
            continue;
        };
        let mut buckets = BTreeMap::new();
        for (m, n) in minutes {
            *buckets.entry(m.div_euclid(b) * b).or_default() += n;
        }
        if i < SERIES.len() - 1 {
            series.push(((*rule).clone(), buckets));
        } else {
            for (m, n) in buckets {
                *rest.entry(m).or_default() += n;
            }
        }
    }
    if !rest.is_empty() {
        series.push(("other rules".to_owned(), rest));
    }
    let top = series
        .iter()
        .flat_map(|(_, m)| m.values().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let std::ops::Range { start: x0, end: x1 } = bucket_range(first, last, b);
    let caption = if series.is_empty() {
        "no events in the window".to_owned()
    } else if b == 1 {
        "events per rule per minute".to_owned()
    } else {
        format!("events per rule per {b} minutes")
    };
    svg(NAME, (WIDTH, 320), |root| {
        let mut chart = time_chart(root, NAME, caption, (first, last, b), top, "events")?;
        for (i, (rule, buckets)) in series.iter().enumerate() {
            let color = SERIES[i % SERIES.len()];
            // Zero where a bucket has no event, so a line drops instead of bridging the gap.
            let mut points = Vec::new();
            let mut m = x0;
            while m < x1 {
                points.push((m + b / 2, buckets.get(&m).copied().unwrap_or(0)));
                m += b;
            }
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(err(NAME))?
                .label(crate::query::fit(rule, 40))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        if !series.is_empty() {
            legend(&mut chart, NAME, None)?;
        }
        Ok(())
    })
}

/// One lane per connection: the handshake, each request and each event at its time (seconds
/// from the first entry shown).
pub fn timeline(t: &Timeline, max_roots: usize) -> Result<String, ChartError> {
    const NAME: &str = "timeline";
    let roots: Vec<_> = t.roots.iter().take(max_roots).collect();
    let t0 = roots
        .iter()
        .filter_map(|r| r.entries.first().map(|e| e.time_ns))
        .min()
        .unwrap_or(0);
    let t1 = roots
        .iter()
        .filter_map(|r| r.entries.last().map(|e| e.time_ns))
        .max()
        .unwrap_or(0);
    let span_s = ((t1 - t0) as f64 / 1e9).max(0.001);
    let lanes = roots.len().max(1);
    let height = 90 + 22 * u32::try_from(lanes).unwrap_or(50);
    let lane_labels: Vec<String> = roots.iter().map(|r| crate::query::fit(&r.id, 28)).collect();
    let caption = if roots.is_empty() {
        "timeline: no connection matches".to_owned()
    } else {
        format!("timeline from {} (seconds)", time::format_ns(t0))
    };
    svg(NAME, (WIDTH, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(caption, (FONT, 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(200)
            .build_cartesian_2d(
                -span_s * 0.02..span_s * 1.05,
                (0..lanes - 1).into_segmented(),
            )
            .map_err(err(NAME))?;
        chart
            .configure_mesh()
            .y_labels(lanes)
            .x_label_style((FONT, 12))
            .y_label_style((FONT, 11))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => lane_labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc("seconds")
            .draw()
            .map_err(err(NAME))?;
        let mut points: [Vec<(f64, SegmentValue<usize>)>; 3] = Default::default();
        for (lane, r) in roots.iter().enumerate() {
            for e in &r.entries {
                let p = ((e.time_ns - t0) as f64 / 1e9, SegmentValue::CenterOf(lane));
                let k = match e.kind {
                    Kind::Handshake | Kind::Connection => 0,
                    Kind::Request => 1,
                    Kind::Event => 2,
                };
                points[k].push(p);
            }
        }
        let [starts, requests, events] = points;
        let start_color = SERIES[3];
        chart
            .draw_series(
                starts
                    .into_iter()
                    .map(|p| Cross::new(p, 6, start_color.stroke_width(2))),
            )
            .map_err(err(NAME))?
            .label("handshake / connection")
            .legend(move |(x, y)| Cross::new((x + 6, y), 5, start_color.stroke_width(2)));
        chart
            .draw_series(
                requests
                    .into_iter()
                    .map(|p| Circle::new(p, 4, CORRELATED.filled())),
            )
            .map_err(err(NAME))?
            .label("request")
            .legend(|(x, y)| Circle::new((x + 6, y), 4, CORRELATED.filled()));
        chart
            .draw_series(
                events
                    .into_iter()
                    .map(|p| TriangleMarker::new(p, 7, ALERT.filled())),
            )
            .map_err(err(NAME))?
            .label("event")
            .legend(|(x, y)| TriangleMarker::new((x + 6, y), 6, ALERT.filled()));
        legend(&mut chart, NAME, Some(SeriesLabelPosition::UpperRight))
    })
}
