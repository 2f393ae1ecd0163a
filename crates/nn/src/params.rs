//! A model's parameters as an ordered list of named f32 tensors: `layers.{i}.weight`
//! (`[inputs, units]`, row-major) and `layers.{i}.bias` (`[units]`) for each dense layer,
//! and whatever else an architecture learns (a threshold per unit, a bias subtracted
//! before the encoder), each under its own name. Optimizer slots, gradients and
//! checkpoints follow the same names and order.

/// One named tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    name: String,
    shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl Tensor {
    /// A tensor of `shape` holding `values`.
    ///
    /// # Panics
    /// If `values` does not hold the product of `shape` values.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> Self {
        assert_eq!(
            values.len(),
            shape.iter().product::<usize>(),
            "tensor values do not fill its shape"
        );
        Self {
            name: name.into(),
            shape,
            values,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
}

/// The name of layer `layer`'s weight matrix.
pub fn weight_name(layer: usize) -> String {
    format!("layers.{layer}.weight")
}

/// The name of layer `layer`'s bias.
pub fn bias_name(layer: usize) -> String {
    format!("layers.{layer}.bias")
}

/// Named tensors in a fixed order, each name once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parameters {
    tensors: Vec<Tensor>,
}

impl Parameters {
    /// The list of `tensors`; `Err` names a repeated name.
    pub fn new(tensors: Vec<Tensor>) -> Result<Self, String> {
        for (i, t) in tensors.iter().enumerate() {
            if tensors[..i].iter().any(|u| u.name == t.name) {
                return Err(format!("tensor {} appears twice", t.name));
            }
        }
        Ok(Self { tensors })
    }

    /// Zeros of the same names and shapes.
    pub fn zeros_like(&self) -> Self {
        Self {
            tensors: self
                .tensors
                .iter()
                .map(|t| Tensor::new(t.name.clone(), t.shape.clone(), vec![0.0; t.values.len()]))
                .collect(),
        }
    }

    /// How many tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total number of values.
    pub fn value_count(&self) -> usize {
        self.tensors.iter().map(|t| t.values.len()).sum()
    }

    /// The tensors in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Tensor> {
        self.tensors.iter()
    }

    /// The tensors in order, values mutable.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Tensor> {
        self.tensors.iter_mut()
    }

    /// The position of the tensor called `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The values of the tensor called `name`.
    pub fn values(&self, name: &str) -> Option<&[f32]> {
        self.get(name).map(|t| t.values.as_slice())
    }

    /// The tensor at `index`.
    ///
    /// # Panics
    /// If there is none.
    pub fn at(&self, index: usize) -> &Tensor {
        &self.tensors[index]
    }

    /// The values of tensors `first` and `second`, both mutable.
    ///
    /// # Panics
    /// If `first == second` or either is out of range.
    pub fn pair_mut(&mut self, first: usize, second: usize) -> (&mut [f32], &mut [f32]) {
        assert_ne!(first, second, "pair_mut: the same tensor twice");
        if first < second {
            let (low, high) = self.tensors.split_at_mut(second);
            (&mut low[first].values, &mut high[0].values)
        } else {
            let (low, high) = self.tensors.split_at_mut(first);
            (&mut high[0].values, &mut low[second].values)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let t = |n: &str, len| Tensor::new(n, vec![len], vec![len as f32; len]);
        assert!(Parameters::new(vec![t("a", 1), t("a", 2)]).is_err());
        let mut p = Parameters::new(vec![t("a", 1), t("b", 2), t("c", 3)]).unwrap();
        assert_eq!(p.position("c"), Some(2));
        assert_eq!(p.values("b"), Some(&[2.0, 2.0][..]));
        assert_eq!(p.value_count(), 6);
        let (c, a) = p.pair_mut(2, 0);
        c[0] = 7.0;
        a[0] = 8.0;
        assert_eq!(p.values("c").unwrap()[0], 7.0);
        assert_eq!(p.values("a").unwrap()[0], 8.0);
        let z = p.zeros_like();
        assert!(z.iter().all(|t| t.values.iter().all(|&v| v == 0.0)));
        assert_eq!(z.get("c").unwrap().shape(), &[3]);
    }
}
