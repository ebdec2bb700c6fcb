//! Everything a client controls before any handler logic: the Idempotency-Key
//! header, the JSON body and its canonical fingerprint, and the ids in paths. None
//! may panic, and equal JSON must fingerprint equally.
#![no_main]

use axum::body::Bytes;
use libfuzzer_sys::fuzz_target;
use voucherd::{
    CampaignId, CreateCampaign, IdempotencyKey, UserId, VoucherCode, canonical_json, fingerprint,
    from_body, parse_value,
};

fuzz_target!(|data: &[u8]| {
    let _ = IdempotencyKey::parse(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = CampaignId::parse(s);
        let _ = VoucherCode::parse(s);
        let _ = UserId::parse(s);
    }
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(value) = parse_value(&bytes) {
        let _ = from_body::<CreateCampaign>(&bytes, &value);
        // The canonical form is a fixed point: parsing it back and canonicalising
        // again gives the same text, hence the same fingerprint.
        let canonical = canonical_json(&value);
        let again: serde_json::Value =
            serde_json::from_str(&canonical).expect("canonical JSON must parse");
        assert_eq!(canonical, canonical_json(&again));
        assert_eq!(
            fingerprint("POST", "/v1/x", &value, None),
            fingerprint("POST", "/v1/x", &again, None)
        );
    }
});
