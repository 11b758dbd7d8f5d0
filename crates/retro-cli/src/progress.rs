//! Progress bars for long stages (items/s and ETA on stderr; hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>10.bold} [{bar:30}] {pos}/{len} {msg} ({per_sec}, ETA {eta})",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

pub fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10.bold} {spinner} {msg} [{elapsed}]").unwrap(),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
