//! JSON values to YAML text, through yaml-rust2's emitter (it quotes every string YAML would
//! read as something else: `"true"`, `"0600"`, `"70"`, `"null"`).

use yaml_rust2::YamlEmitter;
use yaml_rust2::yaml::{Hash, Yaml};

fn to_yaml(v: &serde_json::Value) -> Yaml {
    use serde_json::Value;
    match v {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(a) => Yaml::Array(a.iter().map(to_yaml).collect()),
        Value::Object(m) => {
            let mut h = Hash::new();
            for (k, v) in m {
                h.insert(Yaml::String(k.clone()), to_yaml(v));
            }
            Yaml::Hash(h)
        }
    }
}

/// The values as one YAML stream: each document starts with `---`, the stream ends with a
/// newline.
pub fn documents(values: &[serde_json::Value]) -> Result<String, yaml_rust2::EmitError> {
    let mut out = String::new();
    for v in values {
        let mut doc = String::new();
        YamlEmitter::new(&mut doc).dump(&to_yaml(v))?;
        out.push_str(&doc);
        out.push('\n');
    }
    Ok(out)
}

/// The values as one `v1` `List` (what `kubectl get -o json` prints for several objects).
pub fn json_list(values: &[serde_json::Value]) -> Result<String, serde_json::Error> {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": values});
    let mut s = serde_json::to_string_pretty(&list)?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_that_look_like_other_scalars_stay_strings() {
        let v = serde_json::json!({"a": "true", "b": "0600", "c": "70", "d": "null", "e": 70, "f": "25%", "g": ""});
        let text = documents(&[v]).expect("yaml");
        let back = yaml_rust2::YamlLoader::load_from_str(&text).expect("parse");
        let h = &back[0];
        assert_eq!(h["a"].as_str(), Some("true"), "{text}");
        assert_eq!(h["b"].as_str(), Some("0600"), "{text}");
        assert_eq!(h["c"].as_str(), Some("70"), "{text}");
        assert_eq!(h["d"].as_str(), Some("null"), "{text}");
        assert_eq!(h["e"].as_i64(), Some(70), "{text}");
        assert_eq!(h["f"].as_str(), Some("25%"), "{text}");
        assert_eq!(h["g"].as_str(), Some(""), "{text}");
    }

    #[test]
    fn several_documents_are_separated() {
        let text =
            documents(&[serde_json::json!({"a": 1}), serde_json::json!({"b": 2})]).expect("yaml");
        assert_eq!(text, "---\na: 1\n---\nb: 2\n");
    }
}
