//! `retro plot`: loss curves of training runs on one PNG.

use anyhow::Result;
use clap::Args;
use retro_train::plot::{plot_losses, PlotRun};
use std::path::PathBuf;

#[derive(Args)]
pub struct PlotArgs {
    /// Run directories (or metrics.jsonl files); `LABEL=PATH` names a curve, otherwise the
    /// directory name does.
    #[arg(required = true)]
    runs: Vec<String>,
    /// The PNG to write.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "training and validation loss")]
    title: String,
}

pub fn run(a: PlotArgs) -> Result<()> {
    let runs: Vec<PlotRun> = a
        .runs
        .iter()
        .map(|spec| match spec.split_once('=') {
            Some((label, path)) => PlotRun {
                label: label.to_string(),
                path: PathBuf::from(path),
            },
            None => {
                let path = PathBuf::from(spec);
                let label = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| spec.clone());
                PlotRun { label, path }
            }
        })
        .collect();
    plot_losses(&runs, &a.title, &a.out)?;
    println!("{}", a.out.display());
    Ok(())
}
