//! Elementwise math for the CPU backend's hot loops (softmax over the vocabulary and over
//! attention rows, SiLU).

/// `e^x` in f32 without a libm call, so loops over it vectorise: Cephes' `expf` (reduction to
/// `x = n·ln2 + r`, |r| <= ln2/2, a degree-5 polynomial, about 1 ulp), 0 below -87 (where f32
/// denormals start) and NaN for NaN. Written by hand because no maintained crate offers a
/// vectorisable f32 exp; libm's `expf` is a call per element and was a quarter of tiny-model
/// training time.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Adding 1.5·2²³ rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let clamped = x.clamp(-87.0, 88.0);
    let shifted = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r
        + 5.000_000_1e-1;
    let mantissa = p * r * r + r + 1.0;
    let exponent = shifted.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23;
    let value = mantissa * f32::from_bits(exponent);
    if x < -87.0 { 0.0 } else { value }
}

/// `Σ values` in f64 over eight fixed lanes (so the loop vectorises), summed in a fixed order.
pub(crate) fn sum_f64(values: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
    for chunk in chunks {
        for i in 0..8 {
            lanes[i] += chunk[i] as f64;
        }
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])) + tail
}

/// The largest value (−∞ for none), over eight lanes so the loop vectorises.
pub(crate) fn max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for chunk in chunks {
        for i in 0..8 {
            lanes[i] = lanes[i].max(chunk[i]);
        }
    }
    lanes.iter().copied().fold(tail, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm_to_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_7;
        }
        println!("exp: worst relative error {worst:.2e} over [-87, 88]");
        assert!(worst < 3e-7, "worst relative error {worst:.2e}");
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(88.0).is_finite() && exp(88.0) > 1e38);
    }

    #[test]
    fn sums_and_maxima() {
        let values: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let want: f64 = values.iter().map(|&v| v as f64).sum();
        assert!((sum_f64(&values) - want).abs() < 1e-12);
        assert_eq!(max(&values), values.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }
}
