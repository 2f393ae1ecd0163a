//! The pictures of a sparse autoencoder's run: the feature-density histogram in place of
//! the book's activation histograms, and the decoder rows of the most frequent latents.

use crate::common::{sae, text};
use nn::synthetic::{superposition, SuperpositionSpec};
use std::path::Path;

/// An `.npy` of `rows` synthetic rows of `dim` values in `dir`.
fn rows_file(dir: &Path, dim: usize, features: usize, rows: usize) -> std::path::PathBuf {
    let truth = superposition(SuperpositionSpec {
        dim,
        features,
        rows,
        active: 3.0,
        noise: 0.01,
        seed: 5,
    });
    let path = dir.join(format!("rows{dim}.npy"));
    std::fs::write(&path, nn::npy::encode_f32(&[rows, dim], &truth.rows)).unwrap();
    path
}

fn train_tiny_sae(rows: &Path, out: &Path, latents: &str) {
    let result = sae(&[
        "train",
        "--data",
        rows.to_str().unwrap(),
        "--arch",
        "topk",
        "--latents",
        latents,
        "--k",
        "4",
        "--batch-size",
        "64",
        "--lr-warmup",
        "10",
        "--epochs",
        "1",
        "--valid",
        "200",
        "--threads",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{:?}", text(&result));
}

/// Decodes the PNG at `path` (failing on anything that is not one): its width, height
/// and RGB pixels.
fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("{} is missing: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    pixels.truncate(frame.buffer_size());
    (frame.width, frame.height, pixels)
}

#[test]
fn an_sae_run_draws_its_feature_density_instead_of_activation_histograms() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows_file(dir.path(), 20, 30, 1200);
    let run = dir.path().join("run");
    train_tiny_sae(&rows, &run, "32");
    let (width, height, pixels) = read_png(&run.join("feature_density.png"));
    assert_eq!((width, height), (760, 400));
    // The bars: the blue of the firing latents' bins is there.
    assert!(pixels.chunks_exact(3).any(|p| p == [70, 110, 180]));
    assert!(!run.join("activations.png").exists());
    // Rows of 20 values are not square images.
    assert!(!run.join("features.png").exists());
    assert!(!run.join("reconstructions.png").exists());
}

#[test]
fn an_sae_on_784_wide_rows_draws_its_decoder_rows() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows_file(dir.path(), 784, 64, 1200);
    let run = dir.path().join("run");
    train_tiny_sae(&rows, &run, "400");
    // The 100 most frequent of the 400 latents: a 10 x 10 grid of cells of 28 x 3 pixel
    // tiles, framed (2) and labelled (12), 8 apart, under 44 pixels of heading.
    let (width, height, pixels) = read_png(&run.join("features.png"));
    assert_eq!(
        (width, height),
        (10 * (84 + 2 + 8) + 8, 44 + 10 * (84 + 2 + 12 + 8) + 8)
    );
    // Decoder rows are signed: both ends of the diverging map appear (each tile reaches
    // full red or full blue at its largest magnitude).
    let full_red = pixels.chunks_exact(3).filter(|p| *p == [255, 0, 0]).count();
    let full_blue = pixels.chunks_exact(3).filter(|p| *p == [0, 0, 255]).count();
    assert!(
        full_red >= 9 && full_blue >= 9,
        "{full_red} red, {full_blue} blue"
    );
    assert_eq!(read_png(&run.join("feature_density.png")).0, 760);
    // Five rows above their reconstructions, as the book's models draw them.
    let (width, height, _) = read_png(&run.join("reconstructions.png"));
    assert_eq!((width, height), (5 * (84 + 6) + 6, 2 * (84 + 6) + 6));
    assert!(!run.join("activations.png").exists());
}
