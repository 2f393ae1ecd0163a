//! Command-line arguments. Defaults are the reference model's.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "sae",
    version,
    about = "Sparse autoencoders on the CPU, with Keras' semantics"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train an autoencoder (by default the reference KL sparse autoencoder on Fashion-MNIST).
    Train(Box<TrainArgs>),
    /// Loss, rounded accuracy and coding statistics of a model on the test set.
    Eval(EvalArgs),
    /// Coding-layer activations of every sample of a data file, as .npy or IDX f32.
    Encode(EncodeArgs),
    /// Samples of a data file above their reconstructions, as a PNG.
    Reconstruct(ReconstructArgs),
    /// What a data file (IDX, .npy, safetensors) or a safetensors model holds.
    Info(InfoArgs),
    /// Write a sparse autoencoder for SAELens or sparsify, taking raw activations.
    Export(ExportArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerKind {
    /// Plain stochastic gradient descent.
    Sgd,
    /// SGD with momentum 0.9.
    Momentum,
    /// Adam with Keras' defaults.
    Adam,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SparsityKind {
    /// KL divergence to a target mean activation.
    Kl,
    /// L1 norm of the activations.
    L1,
    /// Squared L2 norm of the activations.
    L2,
    /// Squared difference of each unit's mean activation from the target.
    Squared,
    /// No penalty.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LossKind {
    /// Binary cross-entropy with a sigmoid output.
    Bce,
    /// Mean squared error with a linear output.
    Mse,
}

#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// A directory with the Fashion-MNIST IDX files (gzipped or not), or one data file
    /// whose rows are the samples: IDX, .npy (<f4, <f8, |u1, ...) or safetensors, gzipped
    /// or not, told apart by their contents. u8 values are divided by 255, floats used as
    /// they are. Default: $SAE_DATA, then /usr/share/datasets/fashion-mnist.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub tensor: TensorArg,
}

/// Which tensor of a safetensors data file holds the samples.
#[derive(Args, Debug, Clone)]
pub struct TensorArg {
    /// The tensor of a safetensors data file holding the samples, one per row of its
    /// first dimension (default: the file's only F32 or F64 tensor of rank 2 or more).
    #[arg(long, value_name = "NAME")]
    pub tensor: Option<String>,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Passes over the training set [default: 10]; with --resume, the new total.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub epochs: Option<u32>,
    /// Samples per training step [default: 32; 4096 with --arch].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: Option<u32>,
    /// For training files larger than memory: shuffle within windows of this many MiB of
    /// the file (at least one block), made of blocks of 2 to 8 MiB from all over it, so
    /// that the file is read in large pieces, ahead of the steps, and resident memory
    /// stays about one window. A training set that fits in one window is shuffled whole.
    #[arg(long, value_name = "MIB", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub shuffle_window: u32,
    /// Learning rate (default: 1.0 for sgd and momentum, 0.001 for adam; with --arch,
    /// 2e-4 / sqrt(latents / 16384)).
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Optimizer [default: sgd; adam with --arch].
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    #[command(flatten)]
    pub sae: SaeArgs,
    /// Sparsity penalty on the coding layer.
    #[arg(long, value_enum, default_value_t = SparsityKind::Kl)]
    pub sparsity: SparsityKind,
    /// Target mean activation of the KL penalty (in (0, 1)) and of the squared one.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub sparsity_target: f32,
    /// Weight of the penalty (default: 0.05 for kl, 0.001 for l1 and l2, 0.5 for squared).
    #[arg(long, allow_negative_numbers = true)]
    pub sparsity_weight: Option<f32>,
    /// Keep only the K largest coding activations of each row (a k-sparse autoencoder;
    /// the coding layer must be relu). Trained by the forked step.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub top_k: Option<u32>,
    /// Encoder layers as units:activation, the last being the coding layer
    /// (activations: linear, relu, selu, sigmoid).
    #[arg(long, default_value = "100:selu,300:sigmoid")]
    pub layers: String,
    /// Decoder hidden layers as units:activation (default: the encoder's hidden layers
    /// mirrored); the output layer is added to match the input.
    #[arg(long)]
    pub decoder: Option<String>,
    /// Reconstruction loss.
    #[arg(long, value_enum, default_value_t = LossKind::Bce)]
    pub loss: LossKind,
    /// Validation samples, taken from the end of the training file (or of --data FILE).
    #[arg(long, default_value_t = 5000)]
    pub valid: usize,
    /// Seed of the weights and of the shuffling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Threads the training step's products are split across (default: 2, or 1 on a
    /// single core; at batch 32 more threads have too little to share). Results are
    /// reproducible, bit for bit, for a given seed and thread count.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Output directory (default: a new one under runs/, named by the date and time).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run saved in DIR (after Ctrl-C, or to finish it): its model, optimizer
    /// state, settings and validation split come from there, so the flags that describe
    /// the model and the training are ignored; the result is the same, bit for bit, as
    /// an uninterrupted run.
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Also save the model after every N epochs.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub checkpoint_every: Option<u32>,
    /// No progress bars or epoch lines; errors only.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ArchKind {
    /// ReLU codes with an L1 penalty weighted by the decoder rows' norms.
    Relu,
    /// The k largest ReLU codes of each row, with AuxK.
    Topk,
    /// The k*B largest ReLU codes of a batch of B rows in training, a running threshold
    /// in inference, with AuxK.
    Batchtopk,
    /// ReLU codes above a learned per-latent threshold, with an L0 penalty.
    Jumprelu,
}

/// A sparse autoencoder of interpretability research, on rows of floats.
#[derive(Args, Debug)]
pub struct SaeArgs {
    /// Train a sparse autoencoder of this architecture (one hidden layer of --latents,
    /// a linear decoder, MSE, Adam; see README). --layers, --decoder, --top-k,
    /// --sparsity and --loss describe the book's models and do not apply.
    #[arg(long, value_enum)]
    pub arch: Option<ArchKind>,
    /// Latents [default: 8 x the input width].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), requires = "arch")]
    pub latents: Option<u32>,
    /// topk, batchtopk: latents kept per row (on average over a batch for batchtopk)
    /// [default: 32, or --latents if fewer].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), requires = "arch")]
    pub k: Option<u32>,
    /// relu: the L1 coefficient [default: 5].
    #[arg(long, allow_negative_numbers = true, requires = "arch")]
    pub l1_coefficient: Option<f32>,
    /// relu: steps over which the L1 coefficient rises from 0 [default: 2000].
    #[arg(long, requires = "arch")]
    pub l1_warmup: Option<u64>,
    /// jumprelu: the L0 penalty's coefficient [default: 1].
    #[arg(long, allow_negative_numbers = true, requires = "arch")]
    pub l0_coefficient: Option<f32>,
    /// jumprelu: the width of the rectangle kernel of the thresholds' pseudo-gradient
    /// [default: 0.05].
    #[arg(long, allow_negative_numbers = true, requires = "arch")]
    pub bandwidth: Option<f32>,
    /// jumprelu: every latent's threshold at the start [default: 0.01].
    #[arg(long, allow_negative_numbers = true, requires = "arch")]
    pub initial_threshold: Option<f32>,
    /// topk, batchtopk: the AuxK loss's coefficient, 0 for none [default: 1/32].
    #[arg(long, allow_negative_numbers = true, requires = "arch")]
    pub auxk_coefficient: Option<f32>,
    /// topk, batchtopk: dead latents that reconstruct the residual in AuxK
    /// [default: half the input width; at most the dead latents are used].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), requires = "arch")]
    pub k_aux: Option<u32>,
    /// A latent that has not fired for this many rows is dead [default: 10000000].
    #[arg(long, value_name = "ROWS", requires = "arch")]
    pub dead_after: Option<u64>,
    /// Steps over which the learning rate rises from 0 [default: 1000].
    #[arg(long, value_name = "STEPS", requires = "arch")]
    pub lr_warmup: Option<u64>,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The model (model.safetensors of a run).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Batch size of the evaluation.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: u32,
    #[command(flatten)]
    pub threads: InferenceThreads,
}

/// How many threads inference shares its batches across.
#[derive(Args, Debug)]
pub struct InferenceThreads {
    /// Threads to share the batches across (default: one per core). Each takes whole
    /// batches, so the batches, and the results, are the same for any count.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
}

impl TrainArgs {
    /// The thread count asked for, or the default.
    pub fn thread_count(&self) -> usize {
        self.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
            |t| t as usize,
        )
    }
}

impl InferenceThreads {
    /// The count asked for, or one per core.
    pub fn count(&self) -> usize {
        self.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |t| t as usize,
        )
    }
}

#[derive(Args, Debug)]
pub struct EncodeArgs {
    /// The model.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Samples to encode: an IDX, .npy or safetensors file, gzipped or not.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    #[command(flatten)]
    pub tensor: TensorArg,
    /// Where to write the codings: .npy, or IDX f32 for any other extension.
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Write each row's active (nonzero) codes instead, as two .npy files beside
    /// FILE: `FILE.indices.npy` (int32, -1 pads a row with fewer) and `FILE.values.npy`
    /// (float32, 0 pads), both rows x the largest count in a row, largest value first.
    #[arg(long)]
    pub top: bool,
    #[command(flatten)]
    pub threads: InferenceThreads,
}

#[derive(Args, Debug)]
pub struct ReconstructArgs {
    /// The model.
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Samples to reconstruct: an IDX, .npy or safetensors file, gzipped or not.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    #[command(flatten)]
    pub tensor: TensorArg,
    /// The PNG to write.
    #[arg(long, value_name = "FILE.png")]
    pub output: PathBuf,
    /// How many samples (the first ones).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A data file (IDX, .npy or safetensors, gzipped or not) or a safetensors model.
    pub file: PathBuf,
    #[command(flatten)]
    pub tensor: TensorArg,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The sparse autoencoder (model.safetensors of an SAE run).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// saelens: DIR/cfg.json and DIR/sae_weights.safetensors (SAELens v6, topk or
    /// standard); sparsify: DIR/HOOK/cfg.json and DIR/HOOK/sae.safetensors (topk only).
    #[arg(long, value_enum)]
    pub format: crate::export::Format,
    /// The directory to write to, created if needed; files already there are replaced.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The hook the activations were read at: SAELens' metadata.hook_name, and for
    /// sparsify (where it is required) the hookpoint naming the directory, e.g. layers.6.
    #[arg(long, value_name = "NAME")]
    pub hook_name: Option<String>,
    /// The language model the activations came from (SAELens' metadata.model_name).
    #[arg(long, value_name = "NAME")]
    pub model_name: Option<String>,
    /// Tokens per context the activations were taken with (SAELens' metadata.context_size).
    #[arg(long, value_name = "N")]
    pub context_size: Option<u64>,
}
