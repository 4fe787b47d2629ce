//! Request-path normalisation against the reference model in `path_model`.

use crate::path_model;
use meshproxy::http::path;

/// A request target (after a first byte choosing `normalize_path` and `merge_slashes`):
/// normalised as the model says, idempotent, and escaped slashes unescaped as the model
/// says.
pub fn normalize(data: &[u8]) {
    let Some((&flags, target)) = data.split_first() else {
        return;
    };
    let (norm, merge) = (flags & 1 != 0, flags & 2 != 0);
    let target = String::from_utf8_lossy(target);
    let got = path::normalize(&target, norm, merge).map(|p| p.into_owned());
    assert_eq!(
        got,
        path_model::normalize(&target, norm, merge),
        "{target:?} normalize={norm} merge_slashes={merge}"
    );
    if let Some(once) = &got {
        let twice = path::normalize(once, norm, merge).map(|p| p.into_owned());
        assert_eq!(twice.as_ref(), Some(once), "not idempotent: {target:?}");
    }
    assert_eq!(
        path::unescape_slashes(&target),
        path_model::unescape_slashes(&target),
        "{target:?}"
    );
}
