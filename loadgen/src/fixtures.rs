//! Small helpers shared by the unit tests of the loadgen modules.

use super::generate::{Sale, Tweet};

/// A sale with an id derived from its fields.
pub fn sale(category: &'static str, product: &str, price: f64, quantity: u64) -> Sale {
    Sale {
        id: format!("{category}-{product}-{price}-{quantity}"),
        category,
        product_id: product.to_string(),
        price,
        quantity,
    }
}

/// A tweet with an id derived from its fields.
pub fn tweet(
    location: &'static str,
    weather: &'static str,
    temperature: f64,
    humidity: f64,
) -> Tweet {
    Tweet {
        id: format!("{location}-{weather}-{temperature}-{humidity}"),
        location: location.to_owned(),
        weather,
        temperature,
        humidity,
        text: None,
    }
}
