//! Progress of a training run: a bar per epoch on a terminal, and one Keras-like line
//! per epoch.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nn::{Control, EpochMetrics, Observer, StepProgress};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Redraw the bar's loss text every this many steps: enough to watch, cheap to format.
const MESSAGE_EVERY: usize = 25;

/// Draws progress on standard error (bars only on a terminal) and epoch lines on
/// standard output.
pub struct Progress {
    bars: bool,
    quiet: bool,
    epochs: usize,
    bar: Option<ProgressBar>,
    /// Whether the model's values lie in [0, 1] (a BCE loss), where rounded accuracy
    /// means something; otherwise the line shows the reconstruction's statistics.
    bounded: bool,
    /// The number of a signal that asked to stop (SIGINT, SIGTERM), or 0.
    stop: Arc<AtomicUsize>,
    /// When the command started, and how long after that training began.
    started: Instant,
    pub start_up: Option<Duration>,
}

impl Progress {
    pub fn new(quiet: bool, bounded: bool, stop: Arc<AtomicUsize>, started: Instant) -> Self {
        Self {
            bounded,
            stop,
            started,
            start_up: None,
            bars: !quiet && std::io::stderr().is_terminal(),
            quiet,
            epochs: 0,
            bar: None,
        }
    }
}

impl Progress {
    /// Stop once a signal has arrived: the step in flight has finished by now.
    fn control(&self) -> Control {
        if self.stop.load(Ordering::Relaxed) == 0 {
            Control::Continue
        } else {
            if let Some(bar) = &self.bar {
                bar.finish_and_clear();
            }
            Control::Stop
        }
    }
}

/// The Keras-like line of an epoch: rounded accuracy for a model of values in [0, 1]
/// (`bounded`), the reconstruction's and the codes' statistics for unbounded rows.
pub fn epoch_line(m: &EpochMetrics, epochs: usize, bounded: bool) -> String {
    let mut line = format!(
        "Epoch {}/{epochs} - {:.2}s - loss: {:.4}",
        m.epoch, m.seconds, m.loss
    );
    if bounded {
        line.push_str(&format!(" - rounded_accuracy: {:.4}", m.rounded_accuracy));
    }
    if let Some(l) = m.val_loss {
        line.push_str(&format!(" - val_loss: {l:.4}"));
    }
    if let Some(a) = m.val_rounded_accuracy {
        line.push_str(&format!(" - val_rounded_accuracy: {a:.4}"));
    }
    for (name, value) in [("mse", m.mse), ("fvu", m.fvu), ("l0", m.l0)] {
        if let Some(v) = value {
            line.push_str(&format!(" - {name}: {v:.4}"));
        }
    }
    if let Some(d) = m.dead_latents {
        line.push_str(&format!(" - dead_latents: {d}"));
    }
    line
}

impl Observer for Progress {
    fn epoch_begin(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.start_up.get_or_insert_with(|| self.started.elapsed());
        self.epochs = epochs;
        if !self.bars {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta} {per_sec} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("Epoch {epoch}/{epochs}"));
        self.bar = Some(bar);
    }

    fn step_end(&mut self, p: &StepProgress) -> Control {
        if let Some(bar) = &self.bar {
            bar.set_position(p.step as u64);
            if p.step % MESSAGE_EVERY == 0 || p.step == p.steps {
                let message = if self.bounded {
                    format!(
                        "loss: {:.4} - rounded_accuracy: {:.4}",
                        p.loss, p.rounded_accuracy
                    )
                } else {
                    format!("loss: {:.4}", p.loss)
                };
                bar.set_message(message);
            }
        }
        self.control()
    }

    fn epoch_end(&mut self, m: &EpochMetrics) -> Control {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if !self.quiet {
            println!("{}", epoch_line(m, self.epochs, self.bounded));
        }
        self.control()
    }
}
