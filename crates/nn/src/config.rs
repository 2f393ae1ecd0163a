//! The architecture of an autoencoder, its JSON form (stored in checkpoints), and the
//! `--layers` notation `100:selu,300:sigmoid`.

pub use crate::coding::Coding;
use crate::error::ModelError;
pub use crate::loss::Loss;
pub use crate::penalty::Penalty;
pub use kernels::Activation;
use serde::{Deserialize, Serialize};

/// Largest weight matrix accepted, in elements (1 GiB of f32): a guard against configs
/// that would exhaust memory before anything is trained.
pub const MAX_LAYER_WEIGHTS: usize = 1 << 28;

/// The name of an activation in configs and on the command line.
pub fn activation_name(act: Activation) -> &'static str {
    match act {
        Activation::Linear => "linear",
        Activation::Relu => "relu",
        Activation::Selu => "selu",
        Activation::Sigmoid => "sigmoid",
    }
}

/// Parses an activation name (`linear`, `relu`, `selu`, `sigmoid`).
pub fn parse_activation(name: &str) -> Option<Activation> {
    Some(match name {
        "linear" => Activation::Linear,
        "relu" => Activation::Relu,
        "selu" => Activation::Selu,
        "sigmoid" => Activation::Sigmoid,
        _ => return None,
    })
}

mod activation_serde {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(act: &Activation, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(activation_name(*act))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Activation, D::Error> {
        let name = String::deserialize(d)?;
        parse_activation(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown activation {name:?} (expected linear, relu, selu or sigmoid)"
            ))
        })
    }
}

/// One dense layer: `inputs -> units`, then `activation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSpec {
    /// Input width (`fan_in`).
    pub inputs: usize,
    /// Output width (`fan_out`).
    pub units: usize,
    /// Nonlinearity.
    #[serde(with = "activation_serde")]
    pub activation: Activation,
}

/// A whole autoencoder: dense layers from the input, which one is the coding layer, the
/// penalty on it, and the reconstruction loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Dense layers from the input to the reconstruction.
    pub layers: Vec<LayerSpec>,
    /// Index into `layers` of the coding layer.
    pub coding_layer: usize,
    /// What the coding layer does besides its activation.
    #[serde(default, skip_serializing_if = "Coding::is_plain")]
    pub coding: Coding,
    /// Penalty on the coding layer's output.
    pub penalty: Penalty,
    /// Reconstruction loss.
    pub loss: Loss,
    /// What makes the model a sparse autoencoder of interpretability research, if it is
    /// one (see [`crate::sae`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sae: Option<crate::sae::SaeConfig>,
}

impl ModelConfig {
    /// The reference model: 784 -> 100 SELU -> 300 sigmoid (coding, KL target 0.1,
    /// weight 0.05) -> 100 SELU -> 784 sigmoid, binary cross-entropy.
    pub fn reference() -> Self {
        Self::autoencoder(
            784,
            &[(100, Activation::Selu), (300, Activation::Sigmoid)],
            None,
            Penalty::Kl {
                target: 0.1,
                weight: 0.05,
            },
            Loss::Bce,
        )
    }

    /// An autoencoder from an encoder description (`(units, activation)` from the input;
    /// the last is the coding layer) and an optional decoder description of its hidden
    /// layers. Without one the decoder mirrors the encoder's hidden layers. The output
    /// layer (`inputs` units) is sigmoid for BCE and linear for MSE.
    pub fn autoencoder(
        inputs: usize,
        encoder: &[(usize, Activation)],
        decoder: Option<&[(usize, Activation)]>,
        penalty: Penalty,
        loss: Loss,
    ) -> Self {
        let mirrored: Vec<(usize, Activation)>;
        let decoder = match decoder {
            Some(d) => d,
            None => {
                let hidden = &encoder[..encoder.len().saturating_sub(1)];
                mirrored = hidden.iter().rev().copied().collect();
                &mirrored
            }
        };
        let output_activation = loss.natural_output_activation();
        let mut layers = Vec::new();
        let mut width = inputs;
        for &(units, activation) in encoder
            .iter()
            .chain(decoder)
            .chain(std::iter::once(&(inputs, output_activation)))
        {
            layers.push(LayerSpec {
                inputs: width,
                units,
                activation,
            });
            width = units;
        }
        Self {
            layers,
            coding_layer: encoder.len().saturating_sub(1),
            coding: Coding::Plain,
            penalty,
            loss,
            sae: None,
        }
    }

    /// Input (and reconstruction) width.
    pub fn input_width(&self) -> usize {
        self.layers.first().map_or(0, |l| l.inputs)
    }

    /// Width of the coding layer.
    pub fn coding_width(&self) -> usize {
        self.layers.get(self.coding_layer).map_or(0, |l| l.units)
    }

    /// The model's parameters in order, as `(name, shape)`: each layer's weight
    /// `[inputs, units]` and bias `[units]`.
    pub fn parameter_specs(&self) -> Vec<(String, Vec<usize>)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(l, spec)| {
                [
                    (crate::params::weight_name(l), vec![spec.inputs, spec.units]),
                    (crate::params::bias_name(l), vec![spec.units]),
                ]
            })
            .chain(self.sae.and_then(|sae| {
                let name = sae.threshold_tensor()?;
                Some((name.to_string(), vec![self.coding_width()]))
            }))
            .collect()
    }

    /// Total number of weights and biases.
    pub fn parameter_count(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.inputs * l.units + l.units)
            .sum()
    }

    /// Checks that the layers chain, the output matches the input, the coding layer is a
    /// hidden layer, the penalty's settings are in range, and BCE has a sigmoid output.
    pub fn validate(&self) -> Result<(), ModelError> {
        let invalid = |m: String| Err(ModelError::Invalid(m));
        if self.layers.len() < 2 {
            return invalid(format!(
                "an autoencoder needs at least 2 layers, found {}",
                self.layers.len()
            ));
        }
        for (i, l) in self.layers.iter().enumerate() {
            if l.inputs == 0 || l.units == 0 {
                return invalid(format!(
                    "layer {i} has a zero width ({} -> {})",
                    l.inputs, l.units
                ));
            }
            if l.inputs
                .checked_mul(l.units)
                .is_none_or(|n| n > MAX_LAYER_WEIGHTS)
            {
                return invalid(format!(
                    "layer {i} ({} -> {}) has more than {MAX_LAYER_WEIGHTS} weights",
                    l.inputs, l.units
                ));
            }
        }
        for (i, pair) in self.layers.windows(2).enumerate() {
            if pair[0].units != pair[1].inputs {
                return invalid(format!(
                    "layer {i} outputs {} values but layer {} takes {}",
                    pair[0].units,
                    i + 1,
                    pair[1].inputs
                ));
            }
        }
        let last = self.layers.last().expect("checked non-empty");
        if last.units != self.input_width() {
            return invalid(format!(
                "the output layer has {} units but the input has {}: an autoencoder must reconstruct its input",
                last.units,
                self.input_width()
            ));
        }
        if self.coding_layer + 1 >= self.layers.len() {
            return invalid(format!(
                "coding_layer {} must be a hidden layer (0 to {})",
                self.coding_layer,
                self.layers.len() - 2
            ));
        }
        let coding = &self.layers[self.coding_layer];
        self.coding
            .validate(coding.units, coding.activation)
            .map_err(ModelError::Invalid)?;
        self.penalty.validate().map_err(ModelError::Invalid)?;
        if let Some(sae) = &self.sae {
            self.validate_sae(sae).map_err(ModelError::Invalid)?;
        }
        if self.loss == Loss::Bce && last.activation != Activation::Sigmoid {
            return invalid(format!(
                "binary cross-entropy needs a sigmoid output layer, found {}",
                activation_name(last.activation)
            ));
        }
        Ok(())
    }

    /// The configuration as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("config serialises")
    }

    /// Parses and validates a configuration from JSON.
    pub fn from_json(json: &str) -> Result<Self, ModelError> {
        let config: Self = serde_json::from_str(json)
            .map_err(|e| ModelError::Invalid(format!("config JSON: {e}")))?;
        config.validate()?;
        Ok(config)
    }
}

/// Largest width accepted in a `--layers` string.
pub const MAX_LAYER_UNITS: usize = 1 << 20;

/// Parses `units:activation` pairs separated by commas, e.g. `100:selu,300:sigmoid`.
pub fn parse_layers(text: &str) -> Result<Vec<(usize, Activation)>, String> {
    if text.trim().is_empty() {
        return Err("empty layer list: expected e.g. 100:selu,300:sigmoid".into());
    }
    text.split(',')
        .map(|item| {
            let item = item.trim();
            let (units, act) = item
                .split_once(':')
                .ok_or_else(|| format!("{item:?} is not units:activation (e.g. 100:selu)"))?;
            let units: usize = units.trim().parse().map_err(|_| {
                format!(
                    "{:?} in {item:?} is not a whole number of units",
                    units.trim()
                )
            })?;
            if units == 0 || units > MAX_LAYER_UNITS {
                return Err(format!(
                    "{units} units in {item:?}: expected 1 to {MAX_LAYER_UNITS}"
                ));
            }
            let act = parse_activation(act.trim()).ok_or_else(|| {
                format!(
                    "unknown activation {:?} in {item:?} (expected linear, relu, selu or sigmoid)",
                    act.trim()
                )
            })?;
            Ok((units, act))
        })
        .collect()
}

/// Formats layers back into the `--layers` notation.
pub fn format_layers(layers: &[(usize, Activation)]) -> String {
    layers
        .iter()
        .map(|(u, a)| format!("{u}:{}", activation_name(*a)))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_is_the_book_model() {
        let c = ModelConfig::reference();
        let shape: Vec<_> = c
            .layers
            .iter()
            .map(|l| (l.inputs, l.units, l.activation))
            .collect();
        assert_eq!(
            shape,
            vec![
                (784, 100, Activation::Selu),
                (100, 300, Activation::Sigmoid),
                (300, 100, Activation::Selu),
                (100, 784, Activation::Sigmoid)
            ]
        );
        assert_eq!(c.coding_layer, 1);
        assert_eq!(c.parameter_count(), 218_084);
        c.validate().unwrap();
    }

    #[test]
    fn json_has_the_documented_form_and_round_trips() {
        let c = ModelConfig::reference();
        let json = c.to_json();
        assert!(
            json.contains(r#"{"inputs":784,"units":100,"activation":"selu"}"#),
            "{json}"
        );
        assert!(
            json.contains(r#""penalty":{"kind":"kl","target":0.1,"weight":0.05}"#),
            "{json}"
        );
        assert!(
            json.contains(r#""coding_layer":1"#) && json.contains(r#""loss":"bce""#),
            "{json}"
        );
        assert_eq!(ModelConfig::from_json(&json).unwrap(), c);
        let none = r#"{"layers":[{"inputs":4,"units":2,"activation":"relu"},{"inputs":2,"units":4,"activation":"linear"}],"coding_layer":0,"penalty":{"kind":"none"},"loss":"mse"}"#;
        assert_eq!(ModelConfig::from_json(none).unwrap().penalty, Penalty::None);
        for penalty in [
            Penalty::L2 { weight: 0.01 },
            Penalty::Squared {
                target: 0.2,
                weight: 0.5,
            },
        ] {
            let c = ModelConfig {
                penalty,
                ..ModelConfig::reference()
            };
            assert_eq!(ModelConfig::from_json(&c.to_json()).unwrap(), c);
        }
        assert!(c.to_json().contains(r#""kind":"kl""#));
    }

    #[test]
    fn inconsistent_configs_are_rejected_with_reasons() {
        let mut c = ModelConfig::reference();
        c.layers[2].inputs = 299;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("layer 1 outputs 300"));
        let mut c = ModelConfig::reference();
        c.coding_layer = 3;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("hidden layer"));
        let mut c = ModelConfig::reference();
        c.penalty = Penalty::Kl {
            target: 1.0,
            weight: 0.05,
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("between 0 and 1"));
        let mut c = ModelConfig::reference();
        c.layers[3].activation = Activation::Linear;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("sigmoid output"));
        assert!(ModelConfig::from_json("{").is_err());
        assert!(ModelConfig::from_json(
            r#"{"layers":[],"coding_layer":0,"penalty":{"kind":"none"},"loss":"bce"}"#
        )
        .is_err());
    }

    #[test]
    fn layer_strings_parse_and_reject_nonsense() {
        assert_eq!(
            parse_layers("100:selu, 300:sigmoid").unwrap(),
            vec![(100, Activation::Selu), (300, Activation::Sigmoid)]
        );
        for bad in [
            "",
            "100",
            "100:tanh",
            "x:selu",
            "0:selu",
            "100:selu,",
            "-3:relu",
            "99999999999:relu",
        ] {
            assert!(parse_layers(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            format_layers(&parse_layers("5:relu,2:linear").unwrap()),
            "5:relu,2:linear"
        );
    }

    #[test]
    fn mirrored_decoder_and_explicit_decoder() {
        let c = ModelConfig::autoencoder(
            10,
            &[(6, Activation::Relu), (3, Activation::Linear)],
            None,
            Penalty::None,
            Loss::Mse,
        );
        let units: Vec<_> = c.layers.iter().map(|l| l.units).collect();
        assert_eq!(units, vec![6, 3, 6, 10]);
        c.validate().unwrap();
        let c = ModelConfig::autoencoder(
            10,
            &[(3, Activation::Sigmoid)],
            Some(&[(7, Activation::Selu)]),
            Penalty::L1 { weight: 1e-3 },
            Loss::Bce,
        );
        let units: Vec<_> = c.layers.iter().map(|l| l.units).collect();
        assert_eq!(units, vec![3, 7, 10]);
        c.validate().unwrap();
    }
}
