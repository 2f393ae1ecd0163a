//! The pictures of a run: reconstructions, coding-layer histograms (a sparse
//! autoencoder's feature density), learned features.
//! Drawn into an RGB buffer with embedded-graphics' primitives and bitmap font (no
//! system fonts needed), encoded as PNG.

use anyhow::{Context, Result};
use embedded_graphics::mono_font::ascii::FONT_6X10;
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Line, PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Alignment, Text};
use nn::{Autoencoder, Dataset};
use std::convert::Infallible;
use std::path::Path;

/// An RGB image being drawn.
pub struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            pixels: vec![255; (width * height * 3) as usize],
        }
    }

    fn put(&mut self, x: u32, y: u32, rgb: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = ((y * self.width + x) * 3) as usize;
            self.pixels[i..i + 3].copy_from_slice(&rgb);
        }
    }

    /// Draws a grey-level image (values in [0, 1], row-major `side x side`) scaled by `zoom`.
    fn grey_tile(&mut self, x0: u32, y0: u32, side: usize, values: &[f32], zoom: u32) {
        for (i, &v) in values.iter().enumerate() {
            // Dark strokes on white, as matplotlib's "binary" colour map shows the book's images.
            let level = 255 - (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            let (row, col) = ((i / side) as u32, (i % side) as u32);
            for dy in 0..zoom {
                for dx in 0..zoom {
                    self.put(x0 + col * zoom + dx, y0 + row * zoom + dy, [level; 3]);
                }
            }
        }
    }

    /// Draws signed values (row-major `side x side`) scaled by `zoom` in a diverging
    /// map, scaled to their largest magnitude: white 0, red positive, blue negative.
    fn signed_tile(&mut self, x0: u32, y0: u32, side: usize, values: &[f32], zoom: u32) {
        let largest = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if largest > 0.0 { 1.0 / largest } else { 0.0 };
        for (i, &v) in values.iter().enumerate() {
            let t = (v * scale).clamp(-1.0, 1.0);
            let fade = |t: f32| (255.0 * (1.0 - t.abs())).round() as u8;
            let rgb = if t >= 0.0 {
                [255, fade(t), fade(t)]
            } else {
                [fade(t), fade(t), 255]
            };
            let (row, col) = ((i / side) as u32, (i % side) as u32);
            for dy in 0..zoom {
                for dx in 0..zoom {
                    self.put(x0 + col * zoom + dx, y0 + row * zoom + dy, rgb);
                }
            }
        }
    }

    /// The PNG encoding of the canvas.
    pub fn to_png(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().expect("writing to memory");
        writer
            .write_image_data(&self.pixels)
            .expect("writing to memory");
        writer.finish().expect("writing to memory");
        out
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        nn::checkpoint::write_atomic(path, &self.to_png())
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Infallible> {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 {
                self.put(p.x as u32, p.y as u32, [c.r(), c.g(), c.b()]);
            }
        }
        Ok(())
    }
}

/// The side of a square image of `features` pixels, if it is one (784 gives 28).
pub fn image_side(features: usize) -> Option<usize> {
    let side = (features as f64).sqrt().round() as usize;
    (side * side == features && side > 0).then_some(side)
}

/// `count` images (rows of `originals`) above their reconstructions.
pub fn reconstructions(
    originals: &[f32],
    reconstructed: &[f32],
    count: usize,
    side: usize,
) -> Canvas {
    const ZOOM: u32 = 3;
    const GAP: u32 = 6;
    let tile = side as u32 * ZOOM;
    let mut canvas = Canvas::new(count as u32 * (tile + GAP) + GAP, 2 * (tile + GAP) + GAP);
    let d = side * side;
    for i in 0..count {
        let x = GAP + i as u32 * (tile + GAP);
        canvas.grey_tile(x, GAP, side, &originals[i * d..(i + 1) * d], ZOOM);
        canvas.grey_tile(
            x,
            2 * GAP + tile,
            side,
            &reconstructed[i * d..(i + 1) * d],
            ZOOM,
        );
    }
    canvas
}

fn text(canvas: &mut Canvas, s: &str, x: i32, y: i32, align: Alignment) {
    let style = MonoTextStyle::new(&FONT_6X10, Rgb888::BLACK);
    let _ = Text::with_alignment(s, Point::new(x, y), style, align).draw(canvas);
}

fn line(canvas: &mut Canvas, a: (i32, i32), b: (i32, i32), color: Rgb888, width: u32) {
    let _ = Line::new(Point::new(a.0, a.1), Point::new(b.0, b.1))
        .into_styled(PrimitiveStyle::with_stroke(color, width))
        .draw(canvas);
}

/// Counts of `values` in 10 equal bins on [0, 1] (1.0 falls in the last bin; values
/// outside [0, 1] are not counted, as a histogram over that range shows them).
pub fn histogram(values: &[f32]) -> [usize; 10] {
    let mut bins = [0usize; 10];
    for &v in values {
        if (0.0..=1.0).contains(&v) {
            bins[((v * 10.0) as usize).min(9)] += 1;
        }
    }
    bins
}

/// One histogram panel at `(x0, y0)`, `w x h`, in percent of `values.len()`, with the
/// mean of `values` marked.
fn histogram_panel(
    canvas: &mut Canvas,
    origin: (i32, i32),
    size: (i32, i32),
    values: &[f32],
    title: &str,
    x_label: &str,
    y_label: &str,
) {
    let (x0, y0) = origin;
    let (w, h) = size;
    let (left, right, top, bottom) = (x0 + 50, x0 + w - 15, y0 + 40, y0 + h - 45);
    let bins = histogram(values);
    let total = values.len().max(1) as f64;
    let percents: Vec<f64> = bins.iter().map(|&c| 100.0 * c as f64 / total).collect();
    let highest = percents.iter().cloned().fold(0.0, f64::max);
    let tick_step = if highest <= 50.0 { 10.0 } else { 20.0 };
    let top_percent = (highest / tick_step).ceil().max(1.0) * tick_step;
    let y_of = |p: f64| bottom - ((p / top_percent) * f64::from(bottom - top)) as i32;
    let x_of = |v: f64| left + (v * f64::from(right - left)) as i32;

    text(
        canvas,
        title,
        (left + right) / 2,
        y0 + 14,
        Alignment::Center,
    );
    text(canvas, y_label, left - 45, top - 20, Alignment::Left);
    text(
        canvas,
        x_label,
        (left + right) / 2,
        bottom + 32,
        Alignment::Center,
    );
    let bar_color = Rgb888::new(70, 110, 180);
    for (i, &p) in percents.iter().enumerate() {
        let (xa, xb) = (x_of(i as f64 / 10.0), x_of((i + 1) as f64 / 10.0));
        let y = y_of(p);
        let _ = Rectangle::new(
            Point::new(xa + 1, y),
            Size::new((xb - xa - 1).max(1) as u32, (bottom - y).max(0) as u32),
        )
        .into_styled(PrimitiveStyle::with_fill(bar_color))
        .draw(canvas);
    }
    line(canvas, (left, bottom), (right, bottom), Rgb888::BLACK, 1);
    line(canvas, (left, top), (left, bottom), Rgb888::BLACK, 1);
    for tick in 0..=5 {
        let v = tick as f64 / 5.0;
        let x = x_of(v);
        line(canvas, (x, bottom), (x, bottom + 4), Rgb888::BLACK, 1);
        text(
            canvas,
            &format!("{v:.1}"),
            x,
            bottom + 15,
            Alignment::Center,
        );
    }
    for tick in 0..=(top_percent / tick_step) as usize {
        let p = tick as f64 * tick_step;
        let y = y_of(p);
        line(canvas, (left - 4, y), (left, y), Rgb888::BLACK, 1);
        text(
            canvas,
            &format!("{p:.0}%"),
            left - 6,
            y + 3,
            Alignment::Right,
        );
    }
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / total;
    let xm = x_of(mean.clamp(0.0, 1.0));
    let red = Rgb888::new(210, 40, 40);
    line(canvas, (xm, top), (xm, bottom), red, 2);
    let label = format!("mean {mean:.3}");
    let style = MonoTextStyle::new(&FONT_6X10, red);
    // Above the plot area, where no bar can hide it.
    let _ = Text::with_alignment(&label, Point::new(xm, top - 5), style, Alignment::Center)
        .draw(canvas);
}

/// The book's two histograms of the coding layer: every activation, and each unit's mean.
pub fn activation_histograms(codings: &[f32], units: usize) -> Canvas {
    let samples = codings.len() / units.max(1);
    let unit_means: Vec<f32> = (0..units)
        .map(|j| (0..samples).map(|i| codings[i * units + j]).sum::<f32>() / samples.max(1) as f32)
        .collect();
    let mut canvas = Canvas::new(840, 320);
    histogram_panel(
        &mut canvas,
        (0, 0),
        (420, 320),
        codings,
        "All coding activations",
        "Activation",
        "% activations",
    );
    histogram_panel(
        &mut canvas,
        (420, 0),
        (420, 320),
        &unit_means,
        "Mean activation per unit",
        "Neuron mean activation",
        "% neurons",
    );
    canvas
}

/// What each coding unit draws: the decoder's image of that unit alone switched on,
/// minus its image of all units off, each tile scaled to its own range.
pub fn features(model: &Autoencoder, side: usize) -> Canvas {
    const ZOOM: u32 = 2;
    const GAP: u32 = 2;
    let units = model.coding_width();
    let mut codings = vec![0.0f32; (units + 1) * units];
    for j in 0..units {
        codings[j * units + j] = 1.0;
    }
    let images = model.decode(&codings);
    let d = side * side;
    let baseline = &images[units * d..];
    let columns = (units as f64).sqrt().ceil() as u32;
    let rows = (units as u32).div_ceil(columns);
    let tile = side as u32 * ZOOM;
    let mut canvas = Canvas::new(columns * (tile + GAP) + GAP, rows * (tile + GAP) + GAP);
    for j in 0..units {
        let diff: Vec<f32> = images[j * d..(j + 1) * d]
            .iter()
            .zip(baseline)
            .map(|(a, b)| a - b)
            .collect();
        let (lo, hi) = diff
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let span = (hi - lo).max(1e-12);
        let scaled: Vec<f32> = diff.iter().map(|v| (v - lo) / span).collect();
        let (r, c) = (j as u32 / columns, j as u32 % columns);
        canvas.grey_tile(
            GAP + c * (tile + GAP),
            GAP + r * (tile + GAP),
            side,
            &scaled,
            ZOOM,
        );
    }
    canvas
}

/// Writes the pictures of a trained model: for the book's models reconstructions.png,
/// activations.png and features.png; for a sparse autoencoder feature_density.png in
/// place of activations.png, and its own features.png (see [`sae_pictures`]).
pub fn write_run_pictures(
    model: &Autoencoder,
    valid: &Dataset,
    dir: &Path,
) -> Result<Vec<&'static str>> {
    if model.config().sae.is_some() {
        return sae_pictures(model, valid, dir);
    }
    let codings = model.encode(valid, nn::inference::INFERENCE_BATCH);
    activation_histograms(&codings, model.coding_width()).save(&dir.join("activations.png"))?;
    let Some(side) = image_side(valid.features()) else {
        eprintln!(
            "samples of {} values are not square images: no reconstructions.png or features.png",
            valid.features()
        );
        return Ok(vec!["activations.png"]);
    };
    let count = valid.len().min(5);
    let first = valid.slice(0..count);
    let mut originals = vec![0.0; count * valid.features()];
    first.gather_range(0..count, &mut originals);
    let reconstructed = model.reconstruct(&first, count);
    reconstructions(&originals, &reconstructed, count, side)
        .save(&dir.join("reconstructions.png"))?;
    features(model, side).save(&dir.join("features.png"))?;
    Ok(vec![
        "reconstructions.png",
        "activations.png",
        "features.png",
    ])
}

/// Feature-density bins per decade of firing frequency.
pub const DENSITY_BINS_PER_DECADE: usize = 5;

/// Added to each firing frequency before its log10, as SAELens does; only the dead
/// latents' frequency, 0, is changed by it to speak of, and they get a bar of their own.
const DENSITY_EPSILON: f64 = 1e-10;

/// Sparse autoencoders' decoder rows drawn in features.png.
pub const SAE_FEATURES_SHOWN: usize = 100;

/// Each latent's firing frequency over `data`: the fraction of its rows where the
/// latent's code is above 0 (computed a batch at a time, never holding every code).
pub fn firing_frequencies(model: &Autoencoder, data: &Dataset) -> Vec<f64> {
    let latents = model.coding_width();
    let mut fired = vec![0u64; latents];
    let step = nn::inference::INFERENCE_BATCH;
    for start in (0..data.len()).step_by(step) {
        let end = (start + step).min(data.len());
        let codes = model.encode(&data.slice(start..end), step);
        for row in codes.chunks_exact(latents) {
            for (count, &code) in fired.iter_mut().zip(row) {
                *count += u64::from(code > 0.0);
            }
        }
    }
    let rows = data.len().max(1) as f64;
    fired.iter().map(|&n| n as f64 / rows).collect()
}

/// The feature-density histogram: the dead latents apart, the others binned by the
/// log10 of their firing frequency.
#[derive(Clone, Debug, PartialEq)]
pub struct Density {
    /// Latents that never fired (frequency 0).
    pub dead: usize,
    /// The log10 of the first bin's left edge, `log10(1/rows)`: the lowest frequency a
    /// latent that fires at all can have. Bins counted from there (not from a round
    /// decade) hold at least one whole number of rows each, so that none stays empty
    /// for want of a count of rows falling in it.
    pub lowest: f64,
    /// Latents per bin of `1/DENSITY_BINS_PER_DECADE` decades, from `lowest` up to the
    /// bin holding 0 (frequency 1, which the last bin holds). A bin holds its left edge.
    pub counts: Vec<usize>,
}

/// Bins `frequencies` (each in [0, 1]) measured over `rows` rows.
pub fn density_histogram(frequencies: &[f64], rows: usize) -> Density {
    let per = DENSITY_BINS_PER_DECADE as f64;
    let lowest = -(rows.max(1) as f64).log10();
    let bins = ((-lowest * per - 1e-9).ceil() as usize).max(1);
    let mut density = Density {
        dead: 0,
        lowest,
        counts: vec![0; bins],
    };
    for &f in frequencies {
        if f <= 0.0 {
            density.dead += 1;
            continue;
        }
        // The epsilon also keeps a whole number of rows on the right of a bin edge.
        let position = ((f + DENSITY_EPSILON).log10() - lowest) * per;
        density.counts[(position.max(0.0) as usize).min(bins - 1)] += 1;
    }
    density
}

/// A round step for about `ticks` ticks up to `highest`: 1, 2 or 5 times a power of 10.
fn tick_step(highest: f64, ticks: f64) -> f64 {
    let raw = (highest / ticks).max(1.0);
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * power)
}

/// A frequency as a percentage with two significant digits or so: 100%, 12%, 4.5%, 0.031%.
fn percent(f: f64) -> String {
    let p = 100.0 * f;
    if p >= 10.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        let decimals = (1.0 - p.log10().floor()).max(1.0) as usize;
        format!("{p:.decimals$}%")
    }
}

/// `10^decade` (at most 1) as a percentage, written out: 100%, 1%, 0.01%.
fn decade_percent(decade: i32) -> String {
    let places = decade + 2;
    if places >= 0 {
        format!("1{}%", "0".repeat(places as usize))
    } else {
        format!("0.{}1%", "0".repeat((-places - 1) as usize))
    }
}

/// feature_density.png: how many latents fire how often over `rows` validation rows
/// (the dead ones in a grey bar of their own at the left), with the mean L0.
pub fn density_picture(frequencies: &[f64], rows: usize) -> Canvas {
    const BAR: Rgb888 = Rgb888::new(70, 110, 180);
    const DEAD: Rgb888 = Rgb888::new(120, 120, 120);
    const RED: Rgb888 = Rgb888::new(210, 40, 40);
    let density = density_histogram(frequencies, rows);
    let latents = frequencies.len();
    let l0: f64 = frequencies.iter().sum();
    let (width, height) = (760, 400);
    let mut canvas = Canvas::new(width, height);
    let (left, right, top, bottom) = (70, width as i32 - 20, 80, height as i32 - 60);
    // The dead bar takes two bins' width at the left, then a gap of one, then the axis.
    let bins = density.counts.len() as i32;
    let per = DENSITY_BINS_PER_DECADE as f64;
    let slot = f64::from(right - left) / f64::from(bins + 3);
    let axis_left = left + (3.0 * slot) as i32;
    let span = f64::from(bins) / per;
    let x_of = |decades: f64| {
        axis_left + ((decades - density.lowest) / span * f64::from(right - axis_left)) as i32
    };
    let highest = density
        .counts
        .iter()
        .copied()
        .chain([density.dead])
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let step = tick_step(highest, 5.0);
    let top_count = (highest / step).ceil() * step;
    let y_of = |count: f64| bottom - (count / top_count * f64::from(bottom - top)) as i32;

    text(
        &mut canvas,
        "Feature density: how often each latent fires",
        width as i32 / 2,
        16,
        Alignment::Center,
    );
    text(
        &mut canvas,
        &format!(
            "{latents} latents on {rows} validation rows: {} dead (never fired), mean L0 {l0:.2}",
            density.dead
        ),
        width as i32 / 2,
        32,
        Alignment::Center,
    );
    text(&mut canvas, "latents", left - 60, top - 22, Alignment::Left);
    text(
        &mut canvas,
        "log10(firing frequency + 1e-10): the fraction of rows where the code is > 0",
        (axis_left + right) / 2,
        bottom + 52,
        Alignment::Center,
    );

    let bar = |canvas: &mut Canvas, xa: i32, xb: i32, count: usize, color: Rgb888| {
        let y = y_of(count as f64);
        let _ = Rectangle::new(
            Point::new(xa + 1, y),
            Size::new((xb - xa - 1).max(1) as u32, (bottom - y).max(0) as u32),
        )
        .into_styled(PrimitiveStyle::with_fill(color))
        .draw(canvas);
    };
    let (dead_a, dead_b) = (left + (0.5 * slot) as i32, left + (2.5 * slot) as i32);
    bar(&mut canvas, dead_a, dead_b, density.dead, DEAD);
    let dead_centre = (dead_a + dead_b) / 2;
    text(
        &mut canvas,
        &density.dead.to_string(),
        dead_centre,
        y_of(density.dead as f64) - 4,
        Alignment::Center,
    );
    text(
        &mut canvas,
        "dead",
        dead_centre,
        bottom + 15,
        Alignment::Center,
    );
    for (i, &count) in density.counts.iter().enumerate() {
        let low = density.lowest + i as f64 / per;
        bar(&mut canvas, x_of(low), x_of(low + 1.0 / per), count, BAR);
    }

    line(
        &mut canvas,
        (left, bottom),
        (right, bottom),
        Rgb888::BLACK,
        1,
    );
    line(&mut canvas, (left, top), (left, bottom), Rgb888::BLACK, 1);
    // The axis starts at one row: said under the decades' labels.
    line(
        &mut canvas,
        (axis_left, bottom),
        (axis_left, bottom + 4),
        Rgb888::BLACK,
        1,
    );
    text(
        &mut canvas,
        "1 row",
        axis_left,
        bottom + 39,
        Alignment::Center,
    );
    for decade in (density.lowest - 1e-9).ceil() as i32..=0 {
        let x = x_of(f64::from(decade));
        line(&mut canvas, (x, bottom), (x, bottom + 4), Rgb888::BLACK, 1);
        text(
            &mut canvas,
            &decade.to_string(),
            x,
            bottom + 15,
            Alignment::Center,
        );
        text(
            &mut canvas,
            &decade_percent(decade),
            x,
            bottom + 27,
            Alignment::Center,
        );
    }
    for tick in 0..=(top_count / step) as usize {
        let count = tick as f64 * step;
        let y = y_of(count);
        line(&mut canvas, (left - 4, y), (left, y), Rgb888::BLACK, 1);
        text(
            &mut canvas,
            &format!("{count:.0}"),
            left - 6,
            y + 3,
            Alignment::Right,
        );
    }
    // The mean frequency, L0 over the latents, where a latent firing as often as the
    // average one would sit.
    if l0 > 0.0 && latents > 0 {
        let mean = l0 / latents as f64;
        let xm = x_of(mean.log10().max(density.lowest));
        line(&mut canvas, (xm, top), (xm, bottom), RED, 2);
        let style = MonoTextStyle::new(&FONT_6X10, RED);
        let label = format!("mean {} = L0/latents", percent(mean));
        // Centred on the line where the picture has room, else kept inside it.
        let half = 3 * label.len() as i32 + 4;
        let x = xm.clamp(left + half, width as i32 - half);
        let _ = Text::with_alignment(&label, Point::new(x, top - 8), style, Alignment::Center)
            .draw(&mut canvas);
    }
    canvas
}

/// features.png of a sparse autoencoder: the decoder rows (`decoder`, `latents x d`,
/// `d = side x side`) of the `shown` most frequently firing latents, most frequent
/// first, each in a diverging map scaled to its own largest magnitude (red where the
/// latent adds to a pixel, blue where it takes away), framed in grey, with the latent's
/// index and firing frequency under it.
pub fn decoder_rows(decoder: &[f32], frequencies: &[f64], side: usize, shown: usize) -> Canvas {
    const GAP: u32 = 8;
    const LABEL: u32 = 12;
    const HEADER: u32 = 44;
    let d = side * side;
    let latents = frequencies.len();
    let mut order: Vec<usize> = (0..latents).collect();
    // Most frequent first; ties by index, so the picture depends on the weights only.
    order.sort_by(|&a, &b| frequencies[b].total_cmp(&frequencies[a]).then(a.cmp(&b)));
    order.truncate(shown);
    let zoom = (84 / side as u32).max(1);
    let tile = side as u32 * zoom;
    let labels: Vec<String> = order
        .iter()
        .map(|&j| format!("{j} {}", percent(frequencies[j])))
        .collect();
    let label_width = labels.iter().map(|l| l.len() as u32 * 6).max().unwrap_or(0);
    let cell = (tile + 2).max(label_width) + GAP;
    let columns = ((order.len() as f64).sqrt().ceil() as u32).max(1);
    let rows = (order.len() as u32).div_ceil(columns);
    let width = (columns * cell + GAP).max(640);
    let height = HEADER + rows * (tile + 2 + LABEL + GAP) + GAP;
    let mut canvas = Canvas::new(width, height);
    text(
        &mut canvas,
        &format!(
            "Decoder rows of the {} most frequently firing latents (of {latents}), most frequent first",
            order.len()
        ),
        width as i32 / 2,
        14,
        Alignment::Center,
    );
    text(
        &mut canvas,
        "red adds to a pixel, blue takes away, white 0 (each tile scaled to its largest |value|);",
        width as i32 / 2,
        27,
        Alignment::Center,
    );
    text(
        &mut canvas,
        "under each: the latent's index and how often it fires",
        width as i32 / 2,
        40,
        Alignment::Center,
    );
    let frame = Rgb888::new(190, 190, 190);
    for (n, (&j, label)) in order.iter().zip(&labels).enumerate() {
        let (r, c) = (n as u32 / columns, n as u32 % columns);
        let x = GAP + c * cell + (cell - GAP - tile - 2) / 2;
        let y = HEADER + GAP / 2 + r * (tile + 2 + LABEL + GAP);
        let _ = Rectangle::new(
            Point::new(x as i32, y as i32),
            Size::new(tile + 2, tile + 2),
        )
        .into_styled(PrimitiveStyle::with_stroke(frame, 1))
        .draw(&mut canvas);
        canvas.signed_tile(x + 1, y + 1, side, &decoder[j * d..(j + 1) * d], zoom);
        text(
            &mut canvas,
            label,
            (x + 1 + tile / 2) as i32,
            (y + tile + 2 + LABEL - 2) as i32,
            Alignment::Center,
        );
    }
    canvas
}

/// [`reconstructions`] of a sparse autoencoder, whose rows may be in any units: rows
/// of pixels in [0, 1] are drawn as the book's are (the reconstructions clipped to
/// [0, 1]); others, with their reconstructions, mapped from the shown rows' range.
fn sae_reconstructions(
    originals: &[f32],
    reconstructed: &[f32],
    count: usize,
    side: usize,
) -> Canvas {
    let (lo, hi) = originals
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if lo >= 0.0 && hi <= 1.0 {
        return reconstructions(originals, reconstructed, count, side);
    }
    let span = (hi - lo).max(1e-12);
    let map = |values: &[f32]| -> Vec<f32> { values.iter().map(|v| (v - lo) / span).collect() };
    reconstructions(&map(originals), &map(reconstructed), count, side)
}

/// A sparse autoencoder's pictures: feature_density.png, and for rows that are square
/// images reconstructions.png and features.png (its decoder rows).
pub fn sae_pictures(model: &Autoencoder, valid: &Dataset, dir: &Path) -> Result<Vec<&'static str>> {
    let frequencies = firing_frequencies(model, valid);
    density_picture(&frequencies, valid.len()).save(&dir.join("feature_density.png"))?;
    let Some(side) = image_side(valid.features()) else {
        return Ok(vec!["feature_density.png"]);
    };
    let count = valid.len().min(5);
    let first = valid.slice(0..count);
    let mut originals = vec![0.0; count * valid.features()];
    first.gather_range(0..count, &mut originals);
    let reconstructed = model.reconstruct(&first, count);
    sae_reconstructions(&originals, &reconstructed, count, side)
        .save(&dir.join("reconstructions.png"))?;
    // layers.1.weight is W_dec, [latents, d]: row j is latent j's direction.
    let decoder = model.layer(1).weight;
    decoder_rows(decoder, &frequencies, side, SAE_FEATURES_SHOWN)
        .save(&dir.join("features.png"))?;
    Ok(vec![
        "feature_density.png",
        "reconstructions.png",
        "features.png",
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_density_histogram_counts_dead_latents_apart_and_bins_the_others_by_decade() {
        // 1000 rows: the axis runs from 10^-3 (one row) to 10^0 in 15 bins of 0.2 decade.
        let frequencies = [
            0.0,    // dead
            0.25,   // log10 -0.60: bin 11
            1.0,    // fires on every row: the last bin
            0.001,  // one row: the first bin
            0.0,    // dead
            0.0015, // -2.82: bin 0
            0.01,   // -2 exactly: bin 5, which holds its left edge
            0.5,    // -0.30: bin 13
            0.0,    // dead
            0.3,    // -0.52: bin 12
        ];
        let density = density_histogram(&frequencies, 1000);
        let mut expected = vec![0; 15];
        expected[0] = 2;
        expected[5] = 1;
        expected[11] = 1;
        expected[12] = 1;
        expected[13] = 1;
        expected[14] = 1;
        assert_eq!(
            density,
            Density {
                dead: 3,
                lowest: -3.0,
                counts: expected
            }
        );
    }

    #[test]
    fn the_density_axis_starts_at_one_row_and_leaves_no_bin_empty_for_want_of_rows() {
        // Rows, then the bins from log10(1/rows) that reach frequency 1.
        for (rows, bins) in [(0, 1), (1, 1), (10, 5), (11, 6), (200, 12), (5000, 19)] {
            let density = density_histogram(&[0.0, 1.0], rows);
            let lowest = -(rows.max(1) as f64).log10();
            assert!((density.lowest - lowest).abs() < 1e-12, "{rows} rows");
            assert_eq!(density.counts.len(), bins, "{rows} rows");
            assert_eq!(density.dead, 1);
            assert_eq!(density.counts.last(), Some(&1), "{rows} rows");
        }
        // Latents firing on 1 to 7 of 5000 rows: one row in the first bin, and every
        // bin up to that of 7 rows holds some (with bins from 10^-4, the first two,
        // below one row and between one and two, would stay empty).
        let frequencies: Vec<f64> = (1..=7).map(|n| n as f64 / 5000.0).collect();
        let density = density_histogram(&frequencies, 5000);
        assert_eq!(density.counts[..5], [1, 1, 1, 3, 1], "{density:?}");
        assert_eq!(density.counts[5..].iter().sum::<usize>(), 0);
        // 10 of 1000 rows: log10 -2 exactly, on a bin's left edge, which the bin holds.
        let density = density_histogram(&[0.01], 1000);
        assert_eq!(density.counts[5], 1, "{density:?}");
    }

    #[test]
    fn percentages_and_ticks_read_well() {
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.123), "12%");
        assert_eq!(percent(0.045), "4.5%");
        assert_eq!(percent(0.0031), "0.31%");
        assert_eq!(percent(0.0001), "0.010%");
        assert_eq!(percent(0.0), "0%");
        let decades: Vec<String> = (-5..=0).map(decade_percent).collect();
        assert_eq!(decades, ["0.001%", "0.01%", "0.1%", "1%", "10%", "100%"]);
        assert_eq!(tick_step(3.0, 5.0), 1.0);
        assert_eq!(tick_step(37.0, 5.0), 10.0);
        assert_eq!(tick_step(900.0, 5.0), 200.0);
    }

    #[test]
    fn decoder_rows_are_drawn_most_frequent_first_in_a_signed_map() {
        // Four latents of 2x2 rows; latent 2 fires most, then 0; 1 and 3 are shown last.
        let decoder = [
            1.0, 0.0, 0.0, 0.0, // latent 0
            0.0, 1.0, 0.0, 0.0, // latent 1
            -0.5, 0.0, 0.0, 0.25, // latent 2: blue, white, white, light red
            0.0, 0.0, 0.0, 0.0, // latent 3: all zero, all white
        ];
        let canvas = decoder_rows(&decoder, &[0.2, 0.0, 0.9, 0.0], 2, 2);
        // Two tiles of 2 x 42 pixels in a grid of 2 columns.
        let zoom = 42;
        let pixel = |x: u32, y: u32| {
            let i = ((y * canvas.width + x) * 3) as usize;
            [canvas.pixels[i], canvas.pixels[i + 1], canvas.pixels[i + 2]]
        };
        let cell = 2 * zoom + 2 + 8;
        let x0 = 8 + (cell - 8 - 2 * zoom - 2) / 2 + 1;
        let y0 = 44 + 4 + 1;
        // The first tile is latent 2: its first pixel blue, its last half-red.
        assert_eq!(pixel(x0, y0), [0, 0, 255]);
        assert_eq!(pixel(x0 + zoom, y0), [255, 255, 255]);
        assert_eq!(pixel(x0 + zoom, y0 + zoom), [255, 128, 128]);
        // The second is latent 0: full red at its first pixel.
        assert_eq!(pixel(x0 + cell, y0), [255, 0, 0]);
        assert_eq!(pixel(x0 + cell + zoom, y0), [255, 255, 255]);
    }

    #[test]
    fn the_density_picture_has_its_size_whatever_the_frequencies() {
        for (frequencies, rows) in [
            (vec![], 0),
            (vec![0.0; 8], 100),
            (vec![1.0; 8], 100),
            (vec![0.5, 0.001, 0.0], 1_000_000),
        ] {
            let canvas = density_picture(&frequencies, rows);
            assert_eq!((canvas.width, canvas.height), (760, 400));
        }
    }
}
