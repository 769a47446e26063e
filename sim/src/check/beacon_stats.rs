//! Statistics on beacon values: are their bits uniform, and how far does a
//! withholder bend the one it cares about? For the `randomness` command;
//! floating point is fine here, nothing here decides anything in a run.

use hotpocket_node::crypto::Hash;

/// A test's statistic and its two-sided p-value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Test {
    pub statistic: f64,
    pub p: f64,
}

/// The p-value under which a test fails: one run in a thousand of a
/// perfect generator.
pub const ALPHA: f64 = 0.001;

impl Test {
    pub fn passed(&self) -> bool {
        self.p >= ALPHA
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub values: usize,
    pub bits: u64,
    pub ones: u64,
    /// NIST SP 800-22 frequency (monobit) test over every bit.
    pub monobit: Test,
    /// Chi-square over the 256 byte values, 255 degrees of freedom.
    pub chi_square: Test,
    /// Values a `beacon_withholder` likes (lowest bit clear).
    pub liked: usize,
}

impl Summary {
    /// Share of liked values and its standard error.
    pub fn liked_share(&self) -> (f64, f64) {
        let n = self.values.max(1) as f64;
        let p = self.liked as f64 / n;
        (p, (p * (1.0 - p) / n).sqrt())
    }
}

pub fn summarise(values: &[Hash]) -> Summary {
    let mut ones = 0u64;
    let mut bytes = [0u64; 256];
    for v in values {
        for b in v.0 {
            ones += u64::from(b.count_ones());
            bytes[b as usize] += 1;
        }
    }
    let bits = values.len() as u64 * 256;
    Summary {
        values: values.len(),
        bits,
        ones,
        monobit: monobit(ones, bits),
        chi_square: chi_square(&bytes),
        liked: values.iter().filter(|v| liked(v)).count(),
    }
}

/// |ones - zeros| / sqrt(n) is half-normal for uniform bits.
fn monobit(ones: u64, bits: u64) -> Test {
    let n = bits.max(1) as f64;
    let s = (2.0 * ones as f64 - n).abs() / n.sqrt();
    Test {
        statistic: s,
        p: erfc(s / std::f64::consts::SQRT_2),
    }
}

/// Pearson's chi-square against equal counts, its p-value by the
/// Wilson-Hilferty cube-root normal approximation (good to a few parts in
/// a thousand at 255 degrees of freedom).
fn chi_square(counts: &[u64]) -> Test {
    let total: u64 = counts.iter().sum();
    let k = counts.len() as f64;
    let expected = total.max(1) as f64 / k;
    let x2: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    let df = k - 1.0;
    let z = ((x2 / df).cbrt() - (1.0 - 2.0 / (9.0 * df))) / (2.0 / (9.0 * df)).sqrt();
    Test {
        statistic: x2,
        p: 0.5 * erfc(z / std::f64::consts::SQRT_2),
    }
}

/// The complementary error function (Numerical Recipes' `erfcc`, relative
/// error under 1.2e-7 everywhere).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Whether the withholder likes a value: it wants the lowest bit clear,
/// as a contract drawing heads or tails from `rand` would read it.
pub fn liked(value: &Hash) -> bool {
    value.0[31] & 1 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122),
            (1.0, 0.157_299_207),
            (2.0, 0.004_677_735),
            (-1.0, 1.842_700_793),
        ] {
            assert!((erfc(x) - want).abs() < 1e-6, "erfc({x}) = {}", erfc(x));
        }
    }

    fn hashes(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| Hash::of("randomness-test", &[&i.to_le_bytes()]))
            .collect()
    }

    #[test]
    fn sha256_outputs_pass_and_biased_ones_fail() {
        let good = summarise(&hashes(4000));
        assert!(good.monobit.passed(), "{good:?}");
        assert!(good.chi_square.passed(), "{good:?}");
        let (share, se) = good.liked_share();
        assert!((share - 0.5).abs() < 4.0 * se, "{share} ± {se}");
        // One bit in eight forced on: both tests see it.
        let biased: Vec<Hash> = hashes(4000)
            .into_iter()
            .map(|mut h| {
                h.0.iter_mut().for_each(|b| *b |= 1);
                h
            })
            .collect();
        let bad = summarise(&biased);
        assert!(!bad.monobit.passed() && !bad.chi_square.passed(), "{bad:?}");
        assert_eq!(bad.liked, 0);
        // Bytes spread evenly but bits skewed is the monobit's to catch;
        // the same few byte values over and over, the chi-square's.
        let few: Vec<Hash> = (0..4000u32)
            .map(|i| Hash([[0x0f, 0xf0, 0x33, 0xcc][i as usize % 4]; 32]))
            .collect();
        let s = summarise(&few);
        assert!(s.monobit.passed() && !s.chi_square.passed(), "{s:?}");
    }
}
