//! meshproxy's filters: the contracts filters implement and the built-in filters, one
//! module per filter with its config translation, runtime and tests side by side (the
//! layout of Envoy's `source/extensions/filters/http/<name>/`).

pub mod http;
