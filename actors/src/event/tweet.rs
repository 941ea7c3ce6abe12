//! Tweets: [`Weather`], the canonical [`Tweet`], and [`RawTweet`] with the tweet rules.

use super::{chars_between, id_and_ts, within, Coded, FieldError, RawField, Stamp};
use super::{MAX_NAME_CHARS, MAX_TEXT_CHARS};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Weather reported by a tweet.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Weather {
    /// Sunny.
    Sunny,
    /// Cloudy.
    Cloudy,
    /// Rainy.
    Rainy,
    /// Foggy.
    Foggy,
    /// Snowy.
    Snowy,
    /// Stormy.
    Stormy,
}

impl Weather {
    /// Every weather, in a fixed order.
    pub const ALL: [Weather; 6] = [
        Weather::Sunny,
        Weather::Cloudy,
        Weather::Rainy,
        Weather::Foggy,
        Weather::Snowy,
        Weather::Stormy,
    ];

    /// Canonical lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Weather::Sunny => "sunny",
            Weather::Cloudy => "cloudy",
            Weather::Rainy => "rainy",
            Weather::Foggy => "foggy",
            Weather::Snowy => "snowy",
            Weather::Stormy => "stormy",
        }
    }

    /// Position in [`Weather::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The numeric code, 1–6 in [`Weather::ALL`] order (the protobuf enum value).
    pub const fn code(self) -> i64 {
        self as i64 + 1
    }

    /// Parses a numeric code 1–6.
    pub fn from_code(code: i64) -> Option<Weather> {
        match code {
            1..=6 => Some(Weather::ALL[(code - 1) as usize]),
            _ => None,
        }
    }

    /// Parses a name in any case.
    pub fn from_name(name: &str) -> Option<Weather> {
        // The canonical spelling, as most clients send it, needs no lowercase copy.
        if let Some(w) = Weather::ALL.into_iter().find(|w| w.as_str() == name) {
            return Some(w);
        }
        let lower = name.trim().to_lowercase();
        Weather::ALL.into_iter().find(|w| w.as_str() == lower)
    }
}

impl fmt::Display for Weather {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated weather tweet, in canonical form (this is also its JSON on the bus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tweet {
    /// Event id, unique per kind.
    pub id: String,
    /// Event time, ms since the Unix epoch.
    pub ts: i64,
    /// City or municipality, 1–64 characters.
    pub location: String,
    /// Reported weather.
    pub weather: Weather,
    /// Temperature in °C, −90..=60.
    pub temperature: f64,
    /// Relative humidity in %, 0..=100.
    pub humidity: f64,
    /// Optional text, at most 280 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A tweet as a transport delivered it: each field missing, given, or malformed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawTweet {
    /// Event id (stamped when missing).
    pub id: RawField<String>,
    /// Event time, ms since the epoch (stamped when missing).
    pub ts: RawField<i64>,
    /// City or municipality.
    pub location: RawField<String>,
    /// Reported weather.
    pub weather: RawField<Weather>,
    /// Temperature in °C.
    pub temperature: RawField<f64>,
    /// Relative humidity in %.
    pub humidity: RawField<f64>,
    /// Optional text.
    pub text: RawField<String>,
}

impl Coded for Weather {
    const FIELD: &'static str = "weather";
    const EXPECTED: &'static str = "one of sunny, cloudy, rainy, foggy, snowy, stormy";
    const WITH_CODE: fn(i64) -> Option<Self> = Weather::from_code;
}

impl RawTweet {
    /// Applies the tweet rules, in field order, and stamps a missing `id`/`ts`.
    pub fn validate(self, stamp: &mut impl Stamp) -> Result<Tweet, FieldError> {
        let location = self.location.required("location")?;
        let location = chars_between("location", location, 1, MAX_NAME_CHARS)?;
        let weather = self.weather.required("weather")?;
        let temperature = self.temperature.required("temperature")?;
        let temperature = within("temperature", temperature, -90.0, 60.0, "°C")?;
        let humidity = within(
            "humidity",
            self.humidity.required("humidity")?,
            0.0,
            100.0,
            "%",
        )?;
        let text = self
            .text
            .optional()?
            .map(|t| chars_between("text", t, 0, MAX_TEXT_CHARS))
            .transpose()?;
        let (id, ts) = id_and_ts(self.id, self.ts, stamp)?;
        Ok(Tweet {
            id,
            ts,
            location,
            weather,
            temperature,
            humidity,
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::FixedStamp;
    use super::*;

    fn good() -> RawTweet {
        RawTweet {
            location: RawField::Given("Mixco".into()),
            weather: RawField::from_code(6),
            temperature: RawField::Given(-1.0),
            humidity: RawField::Given(50.0),
            text: RawField::unless_default(String::new()),
            ..RawTweet::default()
        }
    }

    #[test]
    fn a_typed_tweet_meets_the_same_rules() {
        let t = good().validate(&mut FixedStamp(0)).expect("valid");
        assert_eq!((t.weather, t.text), (Weather::Stormy, None));
        for (bad, field, message) in [
            (
                RawTweet {
                    weather: RawField::from_code(0),
                    ..good()
                },
                "weather",
                "field `weather` is required",
            ),
            (
                RawTweet {
                    weather: RawField::from_code(-2),
                    ..good()
                },
                "weather",
                "field `weather` must be one of sunny, cloudy, rainy, foggy, snowy, stormy, got -2",
            ),
            (
                RawTweet {
                    temperature: RawField::Given(60.5),
                    ..good()
                },
                "temperature",
                "field `temperature` must be between -90 and 60 °C, got 60.5",
            ),
            (
                RawTweet {
                    humidity: RawField::Given(f64::INFINITY),
                    ..good()
                },
                "humidity",
                "field `humidity` must be a finite number, got inf",
            ),
            (
                RawTweet {
                    text: RawField::Given("t".repeat(281)),
                    ..good()
                },
                "text",
                "field `text` must be 0 to 280 characters long, got 281",
            ),
        ] {
            let err = bad.validate(&mut FixedStamp(0)).expect_err(message);
            assert_eq!(
                (err.field.as_deref(), err.message.as_str()),
                (Some(field), message)
            );
        }
        assert_eq!(
            Weather::ALL.map(|w| Weather::from_code(w.code())),
            Weather::ALL.map(Some)
        );
    }
}
