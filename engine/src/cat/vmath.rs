//! `exp` and `ln` in plain arithmetic and bit operations, so that loops over bank items
//! that call them are vectorised by the compiler (a libm call is not). The KL criteria
//! need P, ln P and ln Q of every item at θ̂ on each step; with libm that was one exp and
//! up to two ln calls per item and the largest single cost of a KL/KLP step.
//!
//! Accuracy (checked against `f64::exp` / `f64::ln` in the tests below): exp within
//! 1.5 ulp (Cephes' rational approximation after Cody–Waite reduction), ln within 1 ulp
//! (fdlibm's `e_log` reduction and polynomial). Only the domains the criteria need are
//! supported; see each function.

/// 1.5·2⁵²: adding it rounds a |value| < 2⁵¹ to an integer held in the low mantissa bits.
const ROUND_SHIFT: f64 = 6_755_399_441_055_744.0;

/// eˣ for x ≤ 0 (x > 0 is not supported). Below −745 the result is 0 or the smallest
/// subnormal, where `f64::exp` gives 0 from −745.13 on.
#[inline(always)]
pub(crate) fn exp_nonpos(x: f64) -> f64 {
    // Cephes exp: x = k·ln 2 + r with |r| ≤ ln 2 / 2, eʳ = 1 + 2r·P(r²)/(Q(r²) − r·P(r²)).
    const P: [f64; 3] = [0.000_126_177_193_074_810_58, 0.030_299_440_770_744_195, 1.0];
    const Q: [f64; 4] = [
        3.001_985_051_386_644_6e-6,
        0.002_524_483_403_496_841,
        0.227_265_548_208_155_03,
        2.0,
    ];
    const LN2_HI: f64 = 0.693_145_751_953_125;
    const LN2_LO: f64 = 1.428_606_820_309_417_3e-6;
    let x = x.max(-746.0);
    let t = x * std::f64::consts::LOG2_E + ROUND_SHIFT;
    let k = t - ROUND_SHIFT;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let rr = r * r;
    let pr = r * ((P[0] * rr + P[1]) * rr + P[2]);
    let qr = ((Q[0] * rr + Q[1]) * rr + Q[2]) * rr + Q[3];
    let er = 1.0 + 2.0 * (pr / (qr - pr));
    // 2ᵏ = 2^(k + 600) · 2^−600, both normal for k ≥ −1076; k (two's complement) is in
    // the low bits of t, and the shift drops everything above the exponent field.
    let scale = f64::from_bits(t.to_bits().wrapping_add(1023 + 600) << 52);
    er * scale * f64::from_bits((1023 - 600) << 52)
}

/// ln y for a normal y > 0 (y ≥ `f64::MIN_POSITIVE`; 0, subnormals, ∞ and NaN are not
/// supported).
#[inline(always)]
pub(crate) fn ln_normal(y: f64) -> f64 {
    const LG: [f64; 7] = [
        0.666_666_666_666_673_5,
        0.399_999_999_994_094_2,
        0.285_714_287_436_623_9,
        0.222_221_984_321_497_84,
        0.181_835_721_616_180_5,
        0.153_138_376_992_093_73,
        0.147_981_986_051_165_86,
    ];
    const LN2_HI: f64 = 0.693_147_180_369_123_8;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // y = 2ᵏ·m with m ∈ [√2/2, √2): shift the bits so that the mantissa of √2/2 becomes
    // the exponent boundary, read k from the exponent field, rebuild m.
    let hx = y
        .to_bits()
        .wrapping_add(0x3ff0_0000_0000_0000 - 0x3fe6_a09e_0000_0000);
    let k = f64::from_bits(0x4330_0000_0000_0000 | (hx >> 52)) - (4_503_599_627_370_496.0 + 1023.0);
    let m = f64::from_bits((hx & 0x000f_ffff_ffff_ffff) + 0x3fe6_a09e_0000_0000);
    // ln m = 2 atanh(f/(2 + f)) with f = m − 1, as in fdlibm.
    let f = m - 1.0;
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG[1] + w * (LG[3] + w * LG[5]));
    let t2 = z * (LG[0] + w * (LG[2] + w * (LG[4] + w * LG[6])));
    s * (hfsq + t2 + t1) + k * LN2_LO - hfsq + f + k * LN2_HI
}

#[cfg(test)]
mod tests {
    use super::*;

    /// |a − b| in units of b's last place.
    fn ulps(a: f64, b: f64) -> f64 {
        if a == b {
            return 0.0;
        }
        (a - b).abs() / (b.abs() * f64::EPSILON).max(f64::MIN_POSITIVE * f64::EPSILON)
    }

    fn uniforms(n: usize) -> impl Iterator<Item = f64> {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        (0..n).map(move |_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
    }

    #[test]
    fn exp_within_1_5_ulp_of_std() {
        let mut worst = 0.0f64;
        for u in uniforms(200_000) {
            for x in [-u, -40.0 * u, -708.0 * u] {
                worst = worst.max(ulps(exp_nonpos(x), x.exp()));
            }
        }
        assert!(worst <= 1.5, "{worst}");
        for x in [
            0.0,
            -0.0,
            -1e-300,
            -1e-17,
            -0.5 * std::f64::consts::LN_2,
            -1.0,
            -700.0,
        ] {
            assert!(ulps(exp_nonpos(x), x.exp()) <= 1.5, "{x}");
        }
        assert_eq!(exp_nonpos(0.0), 1.0);
        // Subnormal results are tiny either way; far below the range they are (almost) 0.
        assert!(
            exp_nonpos(-740.0) > 0.0 && (exp_nonpos(-740.0) / (-740f64).exp() - 1.0).abs() < 1e-6
        );
        assert!(exp_nonpos(-800.0) <= 5e-324 && exp_nonpos(f64::NEG_INFINITY) <= 5e-324);
    }

    #[test]
    fn ln_within_1_ulp_of_std() {
        let mut worst = 0.0f64;
        for u in uniforms(200_000) {
            for y in [
                u + 1e-300,
                1.0 + u,
                1e-3 + 0.3 * u,
                (700.0 * (u - 0.5)).exp(),
            ] {
                worst = worst.max(ulps(ln_normal(y), y.ln()));
            }
        }
        assert!(worst <= 1.0, "{worst}");
        for y in [
            1.0,
            2.0,
            0.5,
            f64::MIN_POSITIVE,
            f64::MAX,
            1.0 + f64::EPSILON,
            1.0 - f64::EPSILON / 2.0,
        ] {
            assert!(ulps(ln_normal(y), y.ln()) <= 1.0, "{y}");
        }
        assert_eq!(ln_normal(1.0), 0.0);
    }
}
