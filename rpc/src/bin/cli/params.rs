//! Building a method's `params` object, and the value parsers the subcommands share.

use serde_json::{Map, Value};

/// A method name and the `params` to send (`None`: no `params` member).
pub type Call = (&'static str, Option<Value>);

/// A params object under construction; absent options leave their key out.
pub struct Params(pub Map<String, Value>);

impl Params {
    pub fn new() -> Self {
        Params(Map::new())
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_string(), value.into());
        self
    }

    pub fn opt<T: Into<Value>>(self, key: &str, value: Option<T>) -> Self {
        match value {
            Some(value) => self.set(key, value),
            None => self,
        }
    }

    /// A store-true flag: sent as `true` when given, left out otherwise.
    pub fn flag(self, key: &str, on: bool) -> Self {
        if on {
            self.set(key, true)
        } else {
            self
        }
    }

    /// The `params` member: none at all rather than `{}`, as rpc.py sends.
    pub fn into_params(self) -> Option<Value> {
        (!self.0.is_empty()).then_some(Value::Object(self.0))
    }

    /// `(method, params)`, ready to send.
    pub fn call(self, method: &'static str) -> Call {
        (method, self.into_params())
    }
}

/// `method` without params.
pub fn bare(method: &'static str) -> Call {
    (method, None)
}

pub fn parse_json(text: &str, what: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("invalid JSON in {what}: {e}"))
}

/// A size in MiB: a finite number > 0 (fractions allowed), as rpc.py's `type=float`.
pub fn parse_size_mb(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(size) if size.is_finite() && size > 0.0 => Ok(size),
        _ => Err(format!("`{text}` is not a size in MiB (a number > 0)")),
    }
}
