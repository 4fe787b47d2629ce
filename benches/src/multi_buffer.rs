//! Whether the multi-buffer kernel (AVX-512 IFMA) can run on this machine, and how the
//! runner's report says so. Machines differ from run to run: where the kernel cannot run,
//! the cryptomb provider's handshake rows measure its software fallback (`fallback: true`)
//! and are labelled so, the kernel-against-ring rows are not measurable and absent, and
//! the table and the JSON carry the reason.

use serde_json::{json, Value};

/// The kernel's availability in this process (the meshproxy it starts inherits the same
/// environment, so `MESHPROXY_CRYPTOMB_DISABLE=1` switches both off alike).
#[derive(Clone, Copy)]
pub struct MultiBuffer {
    /// Why the kernel cannot run here, or `None` when it can.
    unavailable: Option<&'static str>,
}

/// The label of the provider's rows when it signs in software.
const FALLBACK: &str = "cryptomb software fallback, no multi-buffer kernel here";

impl MultiBuffer {
    /// What this machine allows.
    pub fn here() -> Self {
        Self {
            unavailable: cryptomb::multi_buffer_unavailable_reason(),
        }
    }

    /// Whether the kernel runs here.
    pub fn available(self) -> bool {
        self.unavailable.is_none()
    }

    /// How meshproxy signs RSA behind the provider, for the row's label.
    pub fn rsa_label(self) -> &'static str {
        if self.available() {
            "cryptomb multi-buffer"
        } else {
            FALLBACK
        }
    }

    /// How meshproxy signs ECDSA P-256 behind the provider, for the row's label.
    pub fn ecdsa_label(self) -> &'static str {
        if self.available() {
            "cryptomb precomputed nonces"
        } else {
            FALLBACK
        }
    }

    /// The line printed with the tables.
    pub fn line(self) -> String {
        match self.unavailable {
            None => "multi-buffer kernel: available (AVX-512 IFMA)".into(),
            Some(reason) => format!(
                "multi-buffer kernel: not measurable here ({reason}): the cryptomb rows measure \
                 the provider's software fallback, the kernel rows are absent"
            ),
        }
    }

    /// The report's `multi_buffer_kernel` object.
    pub fn json(self) -> Value {
        json!({"available": self.available(), "reason": self.unavailable})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_kernel_labels_its_rows_and_gives_the_reason() {
        let absent = MultiBuffer {
            unavailable: Some("this CPU lacks AVX-512F or AVX-512 IFMA"),
        };
        assert_eq!(absent.rsa_label(), FALLBACK);
        assert_eq!(absent.ecdsa_label(), FALLBACK);
        assert!(absent
            .line()
            .contains("this CPU lacks AVX-512F or AVX-512 IFMA"));
        assert_eq!(
            absent.json(),
            json!({"available": false, "reason": "this CPU lacks AVX-512F or AVX-512 IFMA"})
        );
        let present = MultiBuffer { unavailable: None };
        assert_eq!(present.rsa_label(), "cryptomb multi-buffer");
        assert_eq!(present.json(), json!({"available": true, "reason": null}));
    }
}
