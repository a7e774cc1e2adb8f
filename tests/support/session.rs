//! A signed-in Supabase user's session token, as the end-to-end tests mint
//! them: HS256 with the test's secret, `role` and `aud` `authenticated`,
//! email `<user>@example.com`, valid ten minutes.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

pub fn token(secret: &str, user: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let claims = json!({"sub": user, "email": format!("{user}@example.com"),
                        "role": "authenticated", "aud": "authenticated", "exp": now + 600});
    let key = EncodingKey::from_secret(secret.as_bytes());
    encode(&Header::default(), &claims, &key).expect("HS256 signs")
}
