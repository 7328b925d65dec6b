//! `[branding]`: what the browser pages say and look like. The raw TOML
//! shape, its validation into [`BrandingConfig`]; `config` collects the errors.
//! Everything here ends up in HTML or CSS, so each value is checked for the
//! one shape it may have before it gets there (an accent colour is exactly
//! `#rrggbb`, a logo is an https URL or a small image file).

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::visible_text::is_visible_text;

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBranding {
    /// The name in every page's header and title. Default "mcpgate".
    pub product_name: Option<String>,
    /// The MCP server's name on the consent page. Default: the host of `public_url`.
    pub server_name: Option<String>,
    /// An https URL of the logo image (allowed in the pages' CSP `img-src`).
    pub logo_url: Option<String>,
    /// A logo image file (png, svg, jpg, webp, gif; at most 256 KiB) that
    /// mcpgate reads at start and serves under `/assets/`.
    pub logo_file: Option<PathBuf>,
    /// Buttons, links and focus rings: `#rrggbb`. Default `#2557d6`.
    pub accent_color: Option<String>,
    /// Where people get help: an https/http URL or a `mailto:` address.
    pub support_url: Option<String>,
    /// What each scope allows, in words, on the consent page (scope → text).
    #[serde(default)]
    pub scopes: BTreeMap<String, String>,
}

/// An accent colour, parsed: only these three bytes ever reach the stylesheet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// Exactly `#rrggbb` (hex digits, either case).
    pub fn parse(text: &str) -> Option<Rgb> {
        let hex = text.strip_prefix('#')?;
        if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
        Some(Rgb(byte(0)?, byte(2)?, byte(4)?))
    }

    pub fn css(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }

    /// WCAG relative luminance.
    fn luminance(self) -> f64 {
        let channel = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.039_28 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * channel(self.0) + 0.7152 * channel(self.1) + 0.0722 * channel(self.2)
    }

    /// The text colour on this background with the higher contrast: for any
    /// colour one of white and black reaches WCAG AA (at least 4.58:1).
    pub fn ink(self) -> Rgb {
        let l = self.luminance();
        let on_white = 1.05 / (l + 0.05);
        let on_black = (l + 0.05) / 0.05;
        if on_white >= on_black {
            Rgb(0xff, 0xff, 0xff)
        } else {
            Rgb(0, 0, 0)
        }
    }
}

/// The logo, if any (printed back as the key it was configured with).
#[derive(Debug, Clone, Serialize)]
pub enum Logo {
    #[serde(rename = "logo_url")]
    Url(Url),
    #[serde(rename = "logo_file")]
    File(PathBuf),
}

#[derive(Debug, Clone, Serialize)]
pub struct BrandingConfig {
    pub product_name: String,
    /// `None`: the host of `public_url`.
    pub server_name: Option<String>,
    #[serde(flatten)]
    pub logo: Option<Logo>,
    #[serde(serialize_with = "as_css")]
    pub accent_color: Rgb,
    pub support_url: Option<Url>,
    pub scopes: BTreeMap<String, String>,
}

impl Default for BrandingConfig {
    fn default() -> Self {
        BrandingConfig {
            product_name: "mcpgate".to_owned(),
            server_name: None,
            logo: None,
            accent_color: DEFAULT_ACCENT,
            support_url: None,
            scopes: BTreeMap::new(),
        }
    }
}

fn as_css<S: serde::Serializer>(value: &Rgb, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&value.css())
}

pub const DEFAULT_ACCENT: Rgb = Rgb(0x25, 0x57, 0xd6);

/// The largest logo file read into memory and served.
pub const MAX_LOGO_BYTES: u64 = 256 * 1024;

/// Image types a logo file may have, by extension, with their media type.
pub const LOGO_TYPES: &[(&str, &str)] = &[
    ("png", "image/png"),
    ("svg", "image/svg+xml"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("webp", "image/webp"),
    ("gif", "image/gif"),
];

/// A short text shown on pages: visible characters only, and short.
fn short_text(key: &str, value: &str, max: usize, errors: &mut Vec<String>) -> bool {
    if value.trim().is_empty() || value.chars().count() > max || !is_visible_text(value) {
        errors.push(format!(
            "branding.{key}: {value:?} must be 1 to {max} visible characters (no control or bidi characters)"
        ));
        return false;
    }
    true
}

pub fn validate(raw: &RawBranding, errors: &mut Vec<String>) -> BrandingConfig {
    let mut config = BrandingConfig::default();
    if let Some(name) = &raw.product_name
        && short_text("product_name", name, 60, errors)
    {
        config.product_name = name.trim().to_owned();
    }
    if let Some(name) = &raw.server_name
        && short_text("server_name", name, 80, errors)
    {
        config.server_name = Some(name.trim().to_owned());
    }
    if let Some(accent) = &raw.accent_color {
        match Rgb::parse(accent) {
            Some(rgb) => config.accent_color = rgb,
            None => errors.push(format!(
                "branding.accent_color: {accent:?} must be a colour written #rrggbb, e.g. \"#2557d6\""
            )),
        }
    }
    config.logo = match (&raw.logo_url, &raw.logo_file) {
        (Some(_), Some(_)) => {
            errors.push("branding: set logo_url or logo_file, not both".to_owned());
            None
        }
        (Some(text), None) => match Url::parse(text) {
            // https only: the page's CSP names this origin in img-src, and a
            // data: or http: image would weaken it or mix content.
            Ok(url) if url.scheme() == "https" && url.host_str().is_some() => Some(Logo::Url(url)),
            _ => {
                errors.push(format!(
                    "branding.logo_url: {text:?} must be an https URL (or use logo_file for an image mcpgate serves itself)"
                ));
                None
            }
        },
        (None, Some(path)) => check_logo_file(path, errors).then(|| Logo::File(path.clone())),
        (None, None) => None,
    };
    if let Some(text) = &raw.support_url {
        match Url::parse(text) {
            Ok(url)
                if (matches!(url.scheme(), "https" | "http") && url.host_str().is_some())
                    || (url.scheme() == "mailto" && url.path().contains('@')) =>
            {
                config.support_url = Some(url)
            }
            _ => errors.push(format!(
                "branding.support_url: {text:?} must be an https URL or a mailto: address"
            )),
        }
    }
    for (scope, words) in &raw.scopes {
        if short_text(&format!("scopes.{scope:?}"), words, 200, errors) {
            config.scopes.insert(scope.clone(), words.trim().to_owned());
        }
    }
    config
}

/// The media type of a logo file, by its extension.
pub fn logo_media_type(path: &std::path::Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    LOGO_TYPES
        .iter()
        .find(|(e, _)| *e == ext)
        .map(|(_, media)| *media)
}

fn check_logo_file(path: &std::path::Path, errors: &mut Vec<String>) -> bool {
    if logo_media_type(path).is_none() {
        errors.push(format!(
            "branding.logo_file: {} must end in .png, .svg, .jpg, .jpeg, .webp or .gif",
            path.display()
        ));
        return false;
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() <= MAX_LOGO_BYTES => true,
        Ok(m) if m.is_file() => {
            errors.push(format!(
                "branding.logo_file: {} is {} bytes; at most {MAX_LOGO_BYTES}",
                path.display(),
                m.len()
            ));
            false
        }
        _ => {
            errors.push(format!(
                "branding.logo_file: {} does not exist or is not a file",
                path.display()
            ));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: RawBranding) -> (BrandingConfig, Vec<String>) {
        let mut errors = Vec::new();
        let config = validate(&raw, &mut errors);
        (config, errors)
    }

    #[test]
    fn an_accent_colour_is_exactly_rrggbb() {
        assert_eq!(Rgb::parse("#A0b1C2"), Some(Rgb(0xa0, 0xb1, 0xc2)));
        for bad in [
            "red",
            "#fff",
            "#12345g",
            "#1234567",
            "123456",
            "#123456;}body{display:none",
            "#12345\u{ff16}",
        ] {
            let (config, errors) = check(RawBranding {
                accent_color: Some(bad.to_owned()),
                ..RawBranding::default()
            });
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert!(errors[0].contains("branding.accent_color"), "{errors:?}");
            assert_eq!(config.accent_color, DEFAULT_ACCENT);
        }
    }

    #[test]
    fn button_ink_reaches_aa_contrast_on_any_accent() {
        let contrast = |a: Rgb, b: Rgb| {
            let (x, y) = (a.luminance(), b.luminance());
            (x.max(y) + 0.05) / (x.min(y) + 0.05)
        };
        for accent in [
            Rgb(0xff, 0xff, 0x00),
            Rgb(0x77, 0x77, 0x77),
            Rgb(0x76, 0x76, 0x76),
            Rgb(0x75, 0x75, 0x75),
            Rgb(0x00, 0x00, 0x80),
            DEFAULT_ACCENT,
            Rgb(0xff, 0x00, 0x00),
        ] {
            let ratio = contrast(accent, accent.ink());
            assert!(ratio >= 4.5, "{accent:?}: {ratio}");
        }
    }

    #[test]
    fn logo_urls_are_https_only_and_files_must_exist() {
        for bad in [
            "http://cdn.example.com/logo.png",
            "data:image/svg+xml,<svg/>",
            "javascript:alert(1)",
        ] {
            let (config, errors) = check(RawBranding {
                logo_url: Some(bad.to_owned()),
                ..RawBranding::default()
            });
            assert!(errors[0].contains("branding.logo_url"), "{bad}: {errors:?}");
            assert!(config.logo.is_none());
        }
        let (_, errors) = check(RawBranding {
            logo_file: Some(PathBuf::from("/nonexistent/logo.png")),
            ..RawBranding::default()
        });
        assert!(errors[0].contains("does not exist"), "{errors:?}");
        let (_, errors) = check(RawBranding {
            logo_file: Some(PathBuf::from("/etc/hostname")),
            ..RawBranding::default()
        });
        assert!(errors[0].contains("must end in"), "{errors:?}");
    }

    #[test]
    fn check_config_prints_branding_as_it_is_configured() {
        let (config, errors) = check(RawBranding {
            logo_url: Some("https://cdn.example.com/l.svg".to_owned()),
            accent_color: Some("#A1B2C3".to_owned()),
            scopes: BTreeMap::from([("calc".to_owned(), "Do sums".to_owned())]),
            ..RawBranding::default()
        });
        assert!(errors.is_empty(), "{errors:?}");
        let printed = toml::to_string_pretty(&config).unwrap();
        let again: RawBranding = toml::from_str(&printed).unwrap();
        assert_eq!(
            again.logo_url.as_deref(),
            Some("https://cdn.example.com/l.svg")
        );
        assert_eq!(again.accent_color.as_deref(), Some("#a1b2c3"));
        assert_eq!(again.scopes["calc"], "Do sums");
    }

    #[test]
    fn texts_must_be_visible_and_support_a_web_or_mail_address() {
        let (_, errors) = check(RawBranding {
            product_name: Some("Acme\u{202e}gnp".to_owned()),
            support_url: Some("javascript:alert(1)".to_owned()),
            scopes: BTreeMap::from([("notes:read".to_owned(), String::new())]),
            ..RawBranding::default()
        });
        assert_eq!(errors.len(), 3, "{errors:?}");
        let (config, errors) = check(RawBranding {
            product_name: Some("Acme AI".to_owned()),
            support_url: Some("mailto:help@acme.example".to_owned()),
            ..RawBranding::default()
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(config.product_name, "Acme AI");
        assert_eq!(
            config.support_url.map(String::from).as_deref(),
            Some("mailto:help@acme.example")
        );
    }
}
