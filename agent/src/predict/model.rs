//! Loading a shipped ONNX model with tract: the file's SHA-256 must match its manifest and
//! its input and output shapes must be what the detector feeds and reads, or it is refused
//! with the reason. Runs on the calling thread (callers use a blocking thread).

use std::path::Path;

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use super::hostfit::HostParams;
use super::manifest::ModelManifest;

type Plan = SimplePlan<TypedFact, Box<dyn TypedOp>, Graph<TypedFact, Box<dyn TypedOp>>>;

/// A loaded, optimised model.
pub struct Model {
    plan: Plan,
    shape: [usize; 3],
    inputs: Vec<Vec<usize>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("shape", &self.shape).finish()
    }
}

/// What one evaluation returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The anomaly score.
    pub score: f32,
    /// Per-feature contributions.
    pub contrib: Vec<f32>,
}

impl Model {
    /// Loads the anomaly model `dir/<manifest.file>`, checking hash and shapes: inputs the
    /// window `[1, lags + 1, d]` and the host's `ar` `[lags d, d]`, `bias` `[1, d]` and
    /// `whiten` `[d, d]`; outputs the score `[1, 1]` and contributions `[1, d]`.
    pub fn load(dir: &Path, m: &ModelManifest) -> Result<Self, String> {
        let d = m.features;
        let lags = m.input_shape[1] - 1;
        let mut model = Self::load_checked(
            dir,
            &m.file,
            &m.sha256,
            &[&m.input_shape, &[lags * d, d], &[1, d], &[d, d]],
            &[&[1, 1], &[1, d]],
        )?;
        model.shape = m.input_shape;
        Ok(model)
    }

    /// Loads `dir/file`, checking its SHA-256 and that it takes `inputs` and returns
    /// `outputs`, in these shapes.
    pub fn load_checked(
        dir: &Path,
        file: &str,
        sha256: &str,
        inputs: &[&[usize]],
        outputs: &[&[usize]],
    ) -> Result<Self, String> {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let sha = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        if sha != sha256 {
            return Err(format!(
                "{}: SHA-256 {sha} does not match the manifest's {sha256}",
                path.display()
            ));
        }
        let shown = path.display().to_string();
        let fail = |e: TractError| format!("{shown}: {e}");
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(fail)?;
        let declared = model.input_outlets().map_err(fail)?.len();
        if declared != inputs.len() {
            return Err(format!(
                "{shown}: {declared} inputs, the agent feeds {}",
                inputs.len()
            ));
        }
        for (i, shape) in inputs.iter().enumerate() {
            model
                .set_input_fact(i, f32::fact(*shape).into())
                .map_err(fail)?;
        }
        let model = model.into_optimized().map_err(fail)?;
        let outs = model.output_outlets().map_err(fail)?.to_vec();
        if outs.len() != outputs.len() {
            return Err(format!(
                "{shown}: {} outputs, the agent reads {}",
                outs.len(),
                outputs.len()
            ));
        }
        for (i, (outlet, want)) in outs.iter().zip(outputs).enumerate() {
            let fact = model.outlet_fact(*outlet).map_err(fail)?;
            let got: Option<Vec<usize>> = fact.shape.as_concrete().map(<[usize]>::to_vec);
            if got.as_deref() != Some(*want) {
                return Err(format!(
                    "{shown}: output {i} has shape {:?}, the schema needs {want:?}",
                    fact.shape
                ));
            }
        }
        let plan = model.into_runnable().map_err(fail)?;
        Ok(Model {
            plan,
            shape: [0; 3],
            inputs: inputs.iter().map(|s| s.to_vec()).collect(),
        })
    }

    /// Evaluates a one-input model on `input` (row-major, the checked input shape); returns
    /// each output flattened.
    pub fn run_all(&self, input: &[f32]) -> Result<Vec<Vec<f32>>, String> {
        self.run_inputs(&[input])
    }

    /// Evaluates the model on `inputs` (each row-major in its checked shape); returns each
    /// output flattened.
    pub fn run_inputs(&self, inputs: &[&[f32]]) -> Result<Vec<Vec<f32>>, String> {
        if inputs.len() != self.inputs.len() {
            return Err(format!(
                "model input: {} tensors, the model takes {}",
                inputs.len(),
                self.inputs.len()
            ));
        }
        let tensors = inputs
            .iter()
            .zip(&self.inputs)
            .map(|(data, shape)| {
                Tensor::from_shape(shape, data)
                    .map(TValue::from)
                    .map_err(|e| format!("model input: {e}"))
            })
            .collect::<Result<TVec<TValue>, String>>()?;
        let out = self.plan.run(tensors).map_err(|e| format!("model: {e}"))?;
        out.iter()
            .map(|t| {
                t.as_slice::<f32>()
                    .map(<[f32]>::to_vec)
                    .map_err(|e| format!("model output: {e}"))
            })
            .collect()
    }

    /// Input shape.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Evaluates one window (`shape[1] * shape[2]` values, oldest sample first) with the
    /// host's own parameters.
    pub fn run(&self, window: &[f32], host: &HostParams) -> Result<Output, String> {
        let mut out = self.run_inputs(&[window, &host.ar, &host.bias, &host.whiten])?;
        if out.len() != 2 {
            return Err(format!("model returned {} outputs, not 2", out.len()));
        }
        let contrib = out.pop().unwrap_or_default();
        let score = out
            .pop()
            .and_then(|s| s.first().copied())
            .ok_or("model returned no score")?;
        Ok(Output { score, contrib })
    }
}
