//! The pictures of a run: reconstructions, coding-layer histograms, learned features.
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

/// Writes reconstructions.png, activations.png and features.png for a trained model.
pub fn write_run_pictures(model: &Autoencoder, valid: &Dataset, dir: &Path) -> Result<()> {
    let codings = model.encode(valid, nn::inference::INFERENCE_BATCH);
    activation_histograms(&codings, model.coding_width()).save(&dir.join("activations.png"))?;
    let Some(side) = image_side(valid.features()) else {
        eprintln!(
            "samples of {} values are not square images: no reconstructions.png or features.png",
            valid.features()
        );
        return Ok(());
    };
    let count = valid.len().min(5);
    let first = valid.slice(0..count);
    let mut originals = vec![0.0; count * valid.features()];
    first.gather_range(0..count, &mut originals);
    let reconstructed = model.reconstruct(&first, count);
    reconstructions(&originals, &reconstructed, count, side)
        .save(&dir.join("reconstructions.png"))?;
    features(model, side).save(&dir.join("features.png"))
}
