//! Precomputed ECDSA nonces: `(k⁻¹, r)` pairs made eight at a time by the kernel, kept in
//! a pool so that a handshake's signature only needs the key-dependent last step and never
//! waits for seven other handshakes to fill a batch.
//!
//! A nonce is used once: [`NoncePool::take`] moves it out, signing consumes it, and its
//! secret half is wiped when it is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroize;

use super::curve::N;
use crate::Error;

/// Limbs of a P-256 number in the kernel's layout.
pub(crate) type Limbs = [u64; 5];

/// One signature's nonce: `k⁻¹·R mod n` (secret) and `r = x(k·G) mod n`.
pub struct Nonce {
    pub(crate) k_inverse: Limbs,
    pub(crate) r: Limbs,
}

impl Drop for Nonce {
    fn drop(&mut self) {
        self.k_inverse.zeroize();
    }
}

/// Sets of eight scalars drawn uniformly from `[1, n-1]`: 32 random bytes each, redrawn
/// when out of range (which happens with probability about 2^-32, and says nothing about
/// the value finally kept).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn random_scalars<const S: usize>(rng: &SystemRandom) -> Result<[[[u8; 32]; 8]; S], Error> {
    let mut scalars = [[[0u8; 32]; 8]; S];
    for scalar in scalars.as_flattened_mut() {
        loop {
            rng.fill(scalar)
                .map_err(|_| Error::Sign("no randomness for an ECDSA nonce".into()))?;
            if scalar.as_slice() < N.as_slice() && scalar.iter().any(|&b| b != 0) {
                break;
            }
        }
    }
    Ok(scalars)
}

/// Nonces a [`NoncePool`] makes per kernel call: four register sets of eight lanes.
const POOL_SETS: usize = 4;

/// `8·SETS` fresh nonces from one kernel call, or an error where it cannot run. More sets
/// share the call's two inversions among more nonces.
pub fn generate<const SETS: usize>() -> Result<Vec<Nonce>, Error> {
    #[cfg(target_arch = "x86_64")]
    if crate::ifma::available() {
        let mut scalars = random_scalars::<SETS>(&SystemRandom::new())?;
        let halves = crate::ifma::p256::nonce_batch(&scalars);
        scalars.zeroize();
        return Ok(halves
            .into_iter()
            .flatten()
            .map(|(k_inverse, r)| Nonce { k_inverse, r })
            .collect());
    }
    Err(super::kernel_unavailable())
}

/// A stock of nonces shared by every P-256 key (a nonce does not depend on the key).
pub struct NoncePool {
    stock: Mutex<Vec<Nonce>>,
    /// Signalled when the stock falls below the refill mark.
    low: Condvar,
    capacity: usize,
    batches: AtomicU64,
}

impl NoncePool {
    /// An empty pool holding up to `capacity` nonces (at least one batch of 32). Without
    /// a thread running [`NoncePool::filler`] it refills inline, a batch at a time, when
    /// it runs dry.
    pub fn new(capacity: usize) -> Arc<Self> {
        let capacity = capacity.max(8 * POOL_SETS);
        Arc::new(NoncePool {
            stock: Mutex::new(Vec::with_capacity(capacity)),
            low: Condvar::new(),
            capacity,
            batches: AtomicU64::new(0),
        })
    }

    /// The filler: a loop that tops the stock up to capacity whenever it falls below
    /// half, so signers find nonces ready. The caller runs it on a thread of its own
    /// making (with the priority it wants); it returns when the pool is dropped.
    pub fn filler(self: &Arc<Self>) -> impl FnOnce() + Send + 'static {
        let pool = Arc::downgrade(self);
        move || fill(pool)
    }

    /// A nonce for one signature: from the stock, or a batch computed now if it is empty.
    pub fn take(&self) -> Result<Nonce, Error> {
        let mut stock = self.lock();
        if let Some(nonce) = stock.pop() {
            if stock.len() < self.capacity / 2 {
                self.low.notify_one();
            }
            return Ok(nonce);
        }
        drop(stock);
        let mut batch = self.make_batch()?;
        let nonce = batch.pop().expect("a batch holds nonces");
        self.lock().extend(batch);
        Ok(nonce)
    }

    /// Batches (kernel calls, 32 nonces each) computed so far, inline or in the background.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Nonces in stock now.
    pub fn stocked(&self) -> usize {
        self.lock().len()
    }

    fn make_batch(&self) -> Result<Vec<Nonce>, Error> {
        let batch = generate::<POOL_SETS>()?;
        self.batches.fetch_add(1, Ordering::Relaxed);
        Ok(batch)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Nonce>> {
        self.stock.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The filler thread: waits for the stock to fall below half, then refills it.
fn fill(pool: Weak<NoncePool>) {
    while let Some(pool) = pool.upgrade() {
        let stock = pool.lock();
        if stock.len() >= pool.capacity / 2 {
            // Wakes at least every second to notice the pool being dropped.
            drop(pool.low.wait_timeout(stock, Duration::from_secs(1)));
            continue;
        }
        drop(stock);
        while pool.stocked() < pool.capacity {
            match pool.make_batch() {
                Ok(batch) => pool.lock().extend(batch),
                Err(_) => return,
            }
        }
    }
}
