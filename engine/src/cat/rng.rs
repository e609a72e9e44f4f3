//! A serialisable SplitMix64 generator (the session persists its state).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::irt::SplitMix64;

/// SplitMix64 (Steele, Lea & Flood 2014): the engine's [`SplitMix64`], made
/// serialisable. Serialises its state as a 16-digit hex string (safe for JSON numbers and
/// BSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatRng(SplitMix64);

impl CatRng {
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }

    /// A generator for stream `(a, b)` derived from `seed` (independent-looking streams).
    pub fn derived(seed: u64, a: u64, b: u64) -> Self {
        let mut r = Self::new(
            seed ^ a.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ b.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7),
        );
        let s = r.next_u64();
        Self::new(s)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform on [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0.uniform()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        self.0.normal()
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

pub(crate) fn ser_u64_hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:016x}"))
}

pub(crate) fn de_u64_hex<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    u64::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
}

impl Serialize for CatRng {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ser_u64_hex(&self.0.state(), s)
    }
}

impl<'de> Deserialize<'de> for CatRng {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_u64_hex(d).map(Self::new)
    }
}
