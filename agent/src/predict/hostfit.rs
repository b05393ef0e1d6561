//! The host's own autoregression and innovation whitening, learned online from its history:
//! the running mean and covariance of its last `lags + 1` samples stacked (raw units, so the
//! per-host normalisation can move underneath), and the fit of the anomaly model's per-host
//! inputs from them — `ar` and `bias` (predicting the newest normalised sample from the ones
//! before it, ridge-regularised) and `whiten` (the inverse square root of the prediction
//! error's covariance, shrunk by a floor). `models/train.py` (`fit_host`) computes the same
//! in batch; a fixture from it checks this code.

use std::collections::VecDeque;

use nalgebra::{DMatrix, DVector};

use super::horizon::Horizon;

/// Running statistics of the stacked recent samples.
#[derive(Debug, Clone)]
pub struct HostStats {
    lags: usize,
    d: usize,
    memory: Horizon,
    mean: Vec<f64>,
    /// Row-major `(lags + 1) d` square covariance (divided by n).
    cov: Vec<f64>,
    recent: VecDeque<Vec<f64>>,
}

/// The model's per-host inputs, row-major f32 as the ONNX graph takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct HostParams {
    /// `[lags * d, d]`: the lagged samples (oldest first) times this predict the newest.
    pub ar: Vec<f32>,
    /// `[1, d]`.
    pub bias: Vec<f32>,
    /// `[d, d]`, symmetric.
    pub whiten: Vec<f32>,
}

/// The fit's regularisation (from the manifest).
#[derive(Debug, Clone, Copy)]
pub struct FitParams {
    /// Added to the lagged samples' covariance.
    pub ridge: f64,
    /// Added to the innovation covariance before whitening.
    pub innovation_floor: f64,
}

impl HostStats {
    /// Empty statistics for `d` metrics and `lags` lags, remembering `cap` windows (see
    /// [`Horizon`]).
    pub fn new(d: usize, lags: usize, cap: f64) -> Self {
        let k = (lags + 1) * d;
        HostStats {
            lags,
            d,
            memory: Horizon::new(cap),
            mean: vec![0.0; k],
            cov: vec![0.0; k * k],
            recent: VecDeque::with_capacity(lags + 1),
        }
    }

    /// Sets how many windows it remembers.
    pub fn set_cap(&mut self, cap: f64) {
        self.memory.set_cap(cap);
    }

    /// Stacked samples learned from (capped).
    pub fn samples(&self) -> f64 {
        self.memory.samples()
    }

    /// Windows learned before the first fit: four per stacked value, so the autoregression
    /// is not fitted to noise.
    pub fn min_samples(&self) -> f64 {
        (4 * (self.lags + 1) * self.d) as f64
    }

    /// Sees the newest raw sample (its first `d` values; a shorter one is ignored); learns
    /// the stacked window it completes when `learn`.
    pub fn observe(&mut self, row: &[f64], learn: bool) {
        let Some(row) = row.get(..self.d) else {
            return;
        };
        if self.recent.len() > self.lags {
            self.recent.pop_front();
        }
        self.recent.push_back(row.to_vec());
        if !learn || self.recent.len() <= self.lags {
            return;
        }
        let a: Vec<f64> = self.recent.iter().flatten().copied().collect();
        // One division, then products: the covariance has (lags + 1)² d² entries (13 000 for
        // the shipped model), and a division each was a third of a step's cost.
        let w = self.memory.next_weight();
        let delta: Vec<f64> = a.iter().zip(&self.mean).map(|(x, m)| x - m).collect();
        for (m, dl) in self.mean.iter_mut().zip(&delta) {
            *m += dl * w;
        }
        let after: Vec<f64> = a.iter().zip(&self.mean).map(|(x, m)| x - m).collect();
        for (row, di) in self.cov.chunks_exact_mut(a.len()).zip(&delta) {
            let dw = di * w;
            for (c, aj) in row.iter_mut().zip(&after) {
                *c += dw * aj - *c * w;
            }
        }
    }

    /// The per-host parameters in the normalised space given by `mean` and `sd` (per metric).
    pub fn fit(&self, mean: &[f64], sd: &[f64], p: FitParams) -> Result<HostParams, String> {
        let (d, lags) = (self.d, self.lags);
        let k = lags * d;
        let all = k + d;
        if self.samples() < self.min_samples() {
            return Err(format!(
                "{:.0} of the {:.0} windows a fit needs learned",
                self.samples(),
                self.min_samples()
            ));
        }
        let metric = |p: usize| p % d;
        let mz = DVector::from_fn(all, |p, _| (self.mean[p] - mean[metric(p)]) / sd[metric(p)]);
        let cz = DMatrix::from_fn(all, all, |p, q| {
            self.cov[p * all + q] / (sd[metric(p)] * sd[metric(q)])
        });
        let chh = cz.view((0, 0), (k, k)).into_owned();
        let chy = cz.view((0, k), (k, d)).into_owned();
        let cyy = cz.view((k, k), (d, d)).into_owned();
        let reg = &chh + DMatrix::identity(k, k) * p.ridge;
        let ar = reg
            .cholesky()
            .ok_or("the lagged samples' covariance is not positive definite")?
            .solve(&chy);
        let bias = mz.rows(k, d) - ar.transpose() * mz.rows(0, k);
        let cross = chy.transpose() * &ar;
        let innov = &cyy - &cross - cross.transpose() + ar.transpose() * &chh * &ar;
        let sym = (&innov + innov.transpose()) * 0.5 + DMatrix::identity(d, d) * p.innovation_floor;
        let eig = sym.symmetric_eigen();
        if eig.eigenvalues.iter().any(|w| !w.is_finite() || *w <= 0.0) {
            return Err("the innovation covariance is not positive definite".into());
        }
        let inv_sqrt = DMatrix::from_diagonal(&eig.eigenvalues.map(|w| 1.0 / w.sqrt()));
        let whiten = &eig.eigenvectors * inv_sqrt * eig.eigenvectors.transpose();
        let row_major = |m: &DMatrix<f64>| -> Vec<f32> {
            (0..m.nrows())
                .flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)] as f32))
                .collect()
        };
        Ok(HostParams {
            ar: row_major(&ar),
            bias: bias.iter().map(|v| *v as f32).collect(),
            whiten: row_major(&whiten),
        })
    }
}
