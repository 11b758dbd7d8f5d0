//! `retro plot` draws every run it is given: each run's curves are found in the PNG by their colour, across the
//! plot's width, and at the height their losses put them.

use std::path::Path;

use plotters::style::{Color, Palette, Palette99};
use retro_train::plot::{plot_losses, PlotRun};

/// A metrics.jsonl with `steps` training losses falling from `from` to `to` and a validation loss every 5 steps.
fn write_run(dir: &Path, from: f64, to: f64, steps: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut lines = String::new();
    for step in 1..=steps {
        let loss = from + (to - from) * (step - 1) as f64 / (steps - 1) as f64;
        lines += &format!(
            "{{\"step\":{step},\"loss\":{loss},\"lr\":0.001,\"grad_norm\":1.0,\"tokens\":64,\"tokens_per_s\":1.0,\"elapsed\":{step}}}\n"
        );
        if step % 5 == 0 {
            lines += &format!(
                "{{\"step\":{step},\"val_loss\":{},\"val_ppl\":1.0,\"val_tokens\":64}}\n",
                loss + 0.1
            );
        }
    }
    std::fs::write(dir.join("metrics.jsonl"), lines).unwrap();
}

struct Image {
    width: usize,
    rgb: Vec<u8>,
}

fn read_png(path: &Path) -> Image {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut rgb = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut rgb).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    Image {
        width: info.width as usize,
        rgb,
    }
}

/// The pixels of exactly this colour: (count, x extent, mean y).
fn pixels_of(image: &Image, rgb: (u8, u8, u8)) -> (usize, usize, f64) {
    let (mut n, mut x_min, mut x_max, mut y_sum) = (0, usize::MAX, 0, 0.0);
    for (i, p) in image.rgb.chunks_exact(3).enumerate() {
        if (p[0], p[1], p[2]) == rgb {
            let (x, y) = (i % image.width, i / image.width);
            n += 1;
            x_min = x_min.min(x);
            x_max = x_max.max(x);
            y_sum += y as f64;
        }
    }
    (n, x_max.saturating_sub(x_min), y_sum / n.max(1) as f64)
}

fn run_colour(i: usize) -> (u8, u8, u8) {
    let c = Palette99::pick(i).to_rgba();
    (c.0, c.1, c.2)
}

#[test]
fn every_run_is_drawn_where_its_losses_are() {
    let tmp = tempfile::tempdir().unwrap();
    let (high, low) = (tmp.path().join("high"), tmp.path().join("low"));
    write_run(&high, 6.0, 5.0, 40);
    write_run(&low, 3.0, 2.0, 40);
    let png = tmp.path().join("both.png");
    let runs = [
        PlotRun {
            label: "high".into(),
            path: high.clone(),
        },
        PlotRun {
            label: "low".into(),
            path: low.clone(),
        },
    ];
    plot_losses(&runs, "two runs", &png).unwrap();
    let image = read_png(&png);
    // The validation curves are drawn in each run's full colour (thick line and points); the legend's sample of
    // the same colour is 20 pixels wide, so an extent over half the image can only come from a curve.
    let (n_high, extent_high, y_high) = pixels_of(&image, run_colour(0));
    let (n_low, extent_low, y_low) = pixels_of(&image, run_colour(1));
    assert!(
        n_high > 200 && n_low > 200,
        "curve pixels: {n_high}, {n_low}"
    );
    assert!(
        extent_high > image.width / 2 && extent_low > image.width / 2,
        "curves span {extent_high} and {extent_low} of {} pixels",
        image.width
    );
    // Image rows grow downwards: the run with the higher loss is drawn higher.
    assert!(y_high + 100.0 < y_low, "mean heights {y_high} and {y_low}");

    // Only the first run: the second colour's curve is gone (a control that the measure can fail).
    let one = tmp.path().join("one.png");
    plot_losses(&runs[..1], "one run", &one).unwrap();
    let (_, extent_absent, _) = pixels_of(&read_png(&one), run_colour(1));
    assert!(
        extent_absent < 50,
        "second run's colour spans {extent_absent} pixels"
    );
}
