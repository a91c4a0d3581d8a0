//! Reads the camelCase option objects that come from TypeScript (and from model files) and
//! rejects what it does not know, naming the options it does.

use serde_json::{Map, Value};

use crate::{Error, Result};

/// A JSON options object being consumed key by key.
pub struct Options {
    what: String,
    map: Map<String, Value>,
    known: Vec<&'static str>,
}

impl Options {
    /// Wraps `value` (must be an object, or null for "no options"); `what` prefixes errors.
    pub fn new(what: &str, value: &Value) -> Result<Self> {
        let map = match value {
            Value::Object(m) => m.clone(),
            Value::Null => Map::new(),
            other => {
                return Err(Error::Invalid(format!(
                    "{what}: expected an options object, got {other}"
                )))
            }
        };
        Ok(Options {
            what: what.to_string(),
            map,
            known: Vec::new(),
        })
    }

    fn take(&mut self, key: &'static str) -> Option<Value> {
        self.known.push(key);
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn bad(&self, key: &str, expected: &str, got: &Value) -> Error {
        Error::Invalid(format!("{}: option '{key}' must be {expected}, got {got}", self.what))
    }

    /// A non-negative integer option.
    pub fn usize(&mut self, key: &'static str) -> Result<Option<usize>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as usize)),
                _ => Err(self.bad(key, "a non-negative integer", &v)),
            },
        }
    }

    /// A positive integer option that must be present.
    pub fn required_positive(&mut self, key: &'static str) -> Result<usize> {
        match self.usize(key)? {
            Some(n) if n > 0 => Ok(n),
            Some(n) => Err(self.bad(key, "a positive integer", &Value::from(n))),
            None => Err(Error::Invalid(format!("{}: option '{key}' is required", self.what))),
        }
    }

    /// A number option.
    pub fn f32(&mut self, key: &'static str) -> Result<Option<f32>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if f.is_finite() => Ok(Some(f as f32)),
                _ => Err(self.bad(key, "a finite number", &v)),
            },
        }
    }

    /// A boolean option.
    pub fn bool(&mut self, key: &'static str) -> Result<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(v) => Err(self.bad(key, "true or false", &v)),
        }
    }

    /// A string option.
    pub fn string(&mut self, key: &'static str) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.bad(key, "a string", &v)),
        }
    }

    /// Any JSON value (for nested specs such as initializers).
    pub fn value(&mut self, key: &'static str) -> Option<Value> {
        self.take(key)
    }

    /// A positive integer or a pair of them (`kernelSize: 3` or `[3, 3]`).
    pub fn pair(&mut self, key: &'static str) -> Result<Option<[usize; 2]>> {
        let Some(v) = self.take(key) else { return Ok(None) };
        let positive = |v: &Value| v.as_f64().filter(|f| *f >= 1.0 && f.fract() == 0.0).map(|f| f as usize);
        let pair = match &v {
            Value::Array(a) if a.len() == 2 => positive(&a[0]).zip(positive(&a[1])).map(|(a, b)| [a, b]),
            other => positive(other).map(|n| [n, n]),
        };
        pair.map(Some)
            .ok_or_else(|| self.bad(key, "a positive integer or a pair of them", &v))
    }

    /// A shape: array of positive integers (`null` entries are not allowed).
    pub fn shape(&mut self, key: &'static str) -> Result<Option<Vec<usize>>> {
        let Some(v) = self.take(key) else { return Ok(None) };
        let dims = v.as_array().and_then(|a| {
            a.iter()
                .map(|d| d.as_f64().filter(|f| *f >= 1.0 && f.fract() == 0.0).map(|f| f as usize))
                .collect::<Option<Vec<_>>>()
        });
        dims.map(Some)
            .ok_or_else(|| self.bad(key, "an array of positive integers", &v))
    }

    /// Errors if any option was not consumed.
    pub fn finish(self) -> Result<()> {
        if let Some(key) = self.map.keys().next() {
            let mut known = self.known.clone();
            known.sort_unstable();
            known.dedup();
            return Err(Error::Invalid(format!(
                "{}: unknown option '{key}'; expected one of: {}",
                self.what,
                known.join(", ")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_and_mistyped_options_are_reported() {
        let mut o = Options::new("Dense", &json!({"units": 3, "unitz": 4})).unwrap();
        assert_eq!(o.required_positive("units").unwrap(), 3);
        let e = o.finish().unwrap_err().to_string();
        assert!(e.contains("unknown option 'unitz'") && e.contains("units"), "{e}");
        let mut o = Options::new("Conv2D", &json!({"kernelSize": "big"})).unwrap();
        let e = o.pair("kernelSize").unwrap_err().to_string();
        assert!(e.contains("kernelSize") && e.contains("\"big\""), "{e}");
    }
}
