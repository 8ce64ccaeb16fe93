//! The encryption stage: accel crypto keys and crypto bdevs.

use super::*;

pub(crate) fn unhex(s: &str, param: &str) -> Result<Vec<u8>, RpcError> {
    let bad = || RpcError::params(format!("Invalid parameters: {param} must be hex digits"));
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| bad()))
        .collect()
}

pub(crate) fn accel_crypto_key_create(
    _: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        cipher: String,
        key: String,
        #[serde(default)]
        key2: Option<String>,
        name: String,
        #[serde(default)]
        tweak_mode: Option<String>,
    }
    let p: P = parse(params)?;
    if let Some(t) = &p.tweak_mode {
        if t != "SIMPLE_LBA" {
            return Err(RpcError::params(format!(
                "Invalid parameters: tweak_mode {t:?} is not supported (only SIMPLE_LBA)"
            )));
        }
    }
    let key = unhex(&p.key, "key")?;
    let key2 = match &p.key2 {
        Some(k) => unhex(k, "key2")?,
        None => {
            return Err(RpcError::params(
                "Invalid parameters: key2 is required for AES_XTS",
            ))
        }
    };
    ballast_engine::backend::crypto::key_create(&p.name, &p.cipher, &key, &key2)
        .map_err(RpcError::from)?;
    tracing::info!(name = %p.name, "crypto key created");
    Ok(json!(true))
}

pub(crate) fn accel_crypto_keys_get(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(default)]
        key_name: Option<String>,
    }
    let p: P = parse(params)?;
    let keys = ballast_engine::backend::crypto::keys();
    if let Some(n) = &p.key_name {
        if !keys.iter().any(|k| &k.name == n) {
            return Err(RpcError::new(-19, format!("key {n} not found")));
        }
    }
    // Never the key material.
    Ok(Value::Array(
        keys.iter()
            .filter(|k| p.key_name.as_ref().is_none_or(|n| n == &k.name))
            .map(|k| json!({"name": k.name, "cipher": k.cipher, "key_bits": k.bits, "in_use": k.users}))
            .collect(),
    ))
}

pub(crate) fn accel_crypto_key_destroy(
    _: &Context,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        key_name: String,
    }
    let p: P = parse(params)?;
    ballast_engine::backend::crypto::key_destroy(&p.key_name)?;
    Ok(json!(true))
}

pub(crate) fn bdev_crypto_create(_: &Context, params: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        base_bdev_name: String,
        name: String,
        key_name: String,
    }
    let p: P = parse(params)?;
    let b = ballast_engine::backend::crypto::create(&p.name, &p.base_bdev_name, &p.key_name)?;
    Ok(json!(b.name()))
}
