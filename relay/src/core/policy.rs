//! Media-security policy (docs/behaviour.md §2): levels, options, device profiles, and how a leg's
//! policy is
//! resolved from the command, the extension's entry and the system setting.

use std::collections::BTreeMap;

use crate::core::srtp::{CryptoSuite, SessionParams};

/// A media-security level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaSecurity {
    /// Plain RTP towards the endpoint.
    Disabled,
    /// Offer SRTP without requiring it (RFC 5939 cap-neg or OSRTP); fall back to plain.
    BestEffort,
    /// SRTP or nothing.
    Enforce,
    /// Pass the endpoints' own SRTP through when both sides can; else best-effort.
    PreferDirect,
}

impl MediaSecurity {
    /// The name used in configuration, ng keys and error messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::BestEffort => "best-effort",
            Self::Enforce => "enforce",
            Self::PreferDirect => "prefer-direct",
        }
    }
}

impl std::fmt::Display for MediaSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A per-leg setting: a level, or "whatever the system says".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LegSecurity {
    /// `same-as-system`.
    SameAsSystem,
    /// An explicit level.
    Level(MediaSecurity),
}

impl std::str::FromStr for LegSecurity {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "same-as-system" => Self::SameAsSystem,
            "disabled" => Self::Level(MediaSecurity::Disabled),
            "best-effort" => Self::Level(MediaSecurity::BestEffort),
            "enforce" => Self::Level(MediaSecurity::Enforce),
            "prefer-direct" => Self::Level(MediaSecurity::PreferDirect),
            _ => return Err(PolicyError::UnknownLevel(s.to_owned())),
        })
    }
}

/// The system's media security options (docs/behaviour.md §2). `authenticate_rtcp` cannot be turned
/// off
/// (RFC 3711 §3.4), so it is not a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecurityOptions {
    /// Encrypt RTP payloads (off: `UNENCRYPTED_SRTP`).
    pub encrypt_rtp: bool,
    /// Authenticate RTP (off: `UNAUTHENTICATED_SRTP`).
    pub authenticate_rtp: bool,
    /// Encrypt RTCP (off: `UNENCRYPTED_SRTCP`).
    pub encrypt_rtcp: bool,
}

impl Default for SecurityOptions {
    fn default() -> Self {
        Self {
            encrypt_rtp: true,
            authenticate_rtp: true,
            encrypt_rtcp: true,
        }
    }
}

impl SecurityOptions {
    /// The session parameters the relay offers under these options.
    pub fn session_params(&self) -> SessionParams {
        SessionParams {
            unencrypted_srtp: !self.encrypt_rtp,
            unencrypted_srtcp: !self.encrypt_rtcp,
            unauthenticated_srtp: !self.authenticate_rtp,
        }
    }

    /// True if a crypto line with `params` may be accepted: it may be stronger than the options
    /// ask for, never weaker.
    pub fn allows(&self, params: SessionParams) -> bool {
        (!params.unencrypted_srtp || !self.encrypt_rtp)
            && (!params.unencrypted_srtcp || !self.encrypt_rtcp)
            && (!params.unauthenticated_srtp || !self.authenticate_rtp)
    }
}

/// How a best-effort offer is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BestEffortStyle {
    /// RFC 5939: `RTP/AVP` with `a=tcap`, `a=acap`, `a=pcfg`.
    CapNeg,
    /// RFC 8643: `RTP/AVP` with plain `a=crypto` lines.
    Osrtp,
}

/// Per-device SRTP behaviour (docs/behaviour.md §2 table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceProfile {
    /// Name used in configuration and in `*-device-profile`.
    pub name: String,
    /// Suites the device speaks, in preference order.
    pub suites: Vec<CryptoSuite>,
    /// Best effort is possible; when false, best-effort becomes enforce (E129).
    pub best_effort: bool,
    /// The device sends a new key on every re-INVITE: never pass its SRTP through.
    pub rekeys_on_reinvite: bool,
    /// An extension-level (or per-command) policy applies; when false, always the system's.
    pub extension_policy: bool,
    /// Video m-lines may be SRTP; when false video stays plain RTP (SRTP audio + RTP video).
    pub secure_video: bool,
    /// Shape of best-effort offers to the device.
    pub best_effort_style: BestEffortStyle,
    /// The relay renumbers the SRTP it sends to the device (docs/behaviour.md §3b); false keeps the
    /// sequence numbers verbatim, for a device that needs them so.
    pub renumber: bool,
}

impl DeviceProfile {
    fn builtin(
        name: &str,
        suites: &[CryptoSuite],
        best_effort: bool,
        rekeys: bool,
        ext: bool,
        video: bool,
    ) -> Self {
        Self {
            name: name.to_owned(),
            suites: suites.to_vec(),
            best_effort,
            rekeys_on_reinvite: rekeys,
            extension_policy: ext,
            secure_video: video,
            best_effort_style: BestEffortStyle::CapNeg,
            renumber: true,
        }
    }
}

/// The profiles every installation has (docs/behaviour.md §2); the configuration may add more.
pub fn builtin_profiles() -> Vec<DeviceProfile> {
    use CryptoSuite::{AesCm128HmacSha1_32 as S32, AesCm128HmacSha1_80 as S80};
    vec![
        DeviceProfile::builtin("sip-11xx-12xx", &[S80, S32], true, true, true, true),
        DeviceProfile::builtin("communicator", &[S80, S32], true, false, true, true),
        DeviceProfile::builtin("b179", &[S80], true, false, true, true),
        DeviceProfile::builtin("e129", &[S80, S32], false, false, false, true),
        DeviceProfile::builtin("onex-mobile", &[S80, S32], true, false, true, true),
        DeviceProfile::builtin("radvision-xt", &[S80], true, false, true, false),
    ]
}

/// An extension's entry in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    /// Its media security setting.
    pub security: LegSecurity,
    /// Its device profile, if any.
    pub profile: Option<String>,
}

/// The policy part of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// System media security.
    pub system: MediaSecurity,
    /// System media security options.
    pub options: SecurityOptions,
    /// Suites in preference order.
    pub suites: Vec<CryptoSuite>,
    /// Shape of best-effort offers for legs without a profile.
    pub best_effort_style: BestEffortStyle,
    /// Extensions by name.
    pub extensions: BTreeMap<String, Extension>,
    /// Device profiles by name (built-ins plus configured ones).
    pub profiles: BTreeMap<String, DeviceProfile>,
    /// The relay renumbers the SRTP it sends (docs/behaviour.md §3b), unless a leg's profile says
    /// not to.
    pub renumber: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            system: MediaSecurity::Disabled,
            options: SecurityOptions::default(),
            suites: CryptoSuite::DEFAULT.to_vec(),
            best_effort_style: BestEffortStyle::CapNeg,
            renumber: true,
            extensions: BTreeMap::new(),
            profiles: builtin_profiles()
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
        }
    }
}

/// What a command says about one leg.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LegRequest {
    /// `*-media-security`.
    pub security: Option<LegSecurity>,
    /// `*-extension`.
    pub extension: Option<String>,
    /// `*-device-profile`.
    pub profile: Option<String>,
}

/// Where a leg's level came from (for logs and `query`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicySource {
    /// The command's `*-media-security`.
    Command,
    /// The extension's entry.
    Extension,
    /// The system setting.
    System,
}

/// The resolved policy of one leg, pinned for the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegPolicy {
    /// The level.
    pub security: MediaSecurity,
    /// Where it came from.
    pub source: PolicySource,
    /// Suites allowed on this leg, in preference order.
    pub suites: Vec<CryptoSuite>,
    /// Media security options.
    pub options: SecurityOptions,
    /// Shape of best-effort offers.
    pub best_effort_style: BestEffortStyle,
    /// The endpoint re-keys on every re-INVITE (never pass through).
    pub rekeys_on_reinvite: bool,
    /// Video may be SRTP.
    pub secure_video: bool,
    /// The SRTP the relay sends to this leg is renumbered (docs/behaviour.md §3b).
    pub renumber: bool,
    /// The device profile's name, if any.
    pub profile: Option<String>,
}

impl LegPolicy {
    /// The level for an m-line of `media` type (`audio`, `video`, ...).
    pub fn for_media(&self, media: &str) -> MediaSecurity {
        if media == "video" && !self.secure_video {
            MediaSecurity::Disabled
        } else {
            self.security
        }
    }
}

/// A policy that cannot be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not one of the level names.
    #[error(
        "unknown media security level {0:?} (same-as-system, disabled, best-effort, enforce, prefer-direct)"
    )]
    UnknownLevel(String),
    /// A profile name that is neither built in nor configured.
    #[error("unknown device profile {0:?}")]
    UnknownProfile(String),
    /// The profile and the system share no suite.
    #[error("device profile {0:?} has no crypto suite in common with the configured suites")]
    NoSuites(String),
}

impl PolicyConfig {
    /// Resolves a leg's policy: the command's setting, else the extension's entry, else the
    /// system's; a profile may forbid the first two and turn best-effort into enforce.
    pub fn resolve(&self, req: &LegRequest) -> Result<LegPolicy, PolicyError> {
        let ext = req
            .extension
            .as_deref()
            .and_then(|name| self.extensions.get(name));
        let profile = match req
            .profile
            .as_deref()
            .or_else(|| ext.and_then(|e| e.profile.as_deref()))
        {
            Some(name) => Some(
                self.profiles
                    .get(name)
                    .ok_or_else(|| PolicyError::UnknownProfile(name.to_owned()))?,
            ),
            None => None,
        };
        let allow_leg_level = profile.is_none_or(|p| p.extension_policy);
        let (mut security, source) = match (req.security, ext.map(|e| e.security)) {
            (Some(LegSecurity::Level(l)), _) if allow_leg_level => (l, PolicySource::Command),
            (Some(LegSecurity::SameAsSystem), _) if allow_leg_level => {
                (self.system, PolicySource::Command)
            }
            (_, Some(LegSecurity::Level(l))) if allow_leg_level => (l, PolicySource::Extension),
            _ => (self.system, PolicySource::System),
        };
        if let Some(p) = profile {
            if !p.best_effort
                && matches!(
                    security,
                    MediaSecurity::BestEffort | MediaSecurity::PreferDirect
                )
            {
                security = MediaSecurity::Enforce;
            }
            // docs/behaviour.md §2: a leg whose device re-keys on re-INVITE is always anchored.
            if p.rekeys_on_reinvite && security == MediaSecurity::PreferDirect {
                security = MediaSecurity::BestEffort;
            }
        }
        let suites: Vec<CryptoSuite> = match profile {
            Some(p) => self
                .suites
                .iter()
                .copied()
                .filter(|s| p.suites.contains(s))
                .collect(),
            None => self.suites.clone(),
        };
        if suites.is_empty() {
            return Err(PolicyError::NoSuites(
                profile.map(|p| p.name.clone()).unwrap_or_default(),
            ));
        }
        Ok(LegPolicy {
            security,
            source,
            suites,
            options: self.options,
            best_effort_style: profile.map_or(self.best_effort_style, |p| p.best_effort_style),
            rekeys_on_reinvite: profile.is_some_and(|p| p.rekeys_on_reinvite),
            secure_video: profile.is_none_or(|p| p.secure_video),
            renumber: self.renumber && profile.is_none_or(|p| p.renumber),
            profile: profile.map(|p| p.name.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(system: MediaSecurity) -> PolicyConfig {
        let mut c = PolicyConfig {
            system,
            ..PolicyConfig::default()
        };
        c.extensions.insert(
            "201".into(),
            Extension {
                security: LegSecurity::Level(MediaSecurity::Enforce),
                profile: None,
            },
        );
        c.extensions.insert(
            "202".into(),
            Extension {
                security: LegSecurity::SameAsSystem,
                profile: Some("e129".into()),
            },
        );
        c.extensions.insert(
            "203".into(),
            Extension {
                security: LegSecurity::Level(MediaSecurity::Disabled),
                profile: Some("e129".into()),
            },
        );
        c.extensions.insert(
            "204".into(),
            Extension {
                security: LegSecurity::Level(MediaSecurity::PreferDirect),
                profile: Some("sip-11xx-12xx".into()),
            },
        );
        c
    }

    fn req(security: Option<&str>, ext: Option<&str>, profile: Option<&str>) -> LegRequest {
        LegRequest {
            security: security.map(|s| s.parse().unwrap()),
            extension: ext.map(Into::into),
            profile: profile.map(Into::into),
        }
    }

    #[test]
    fn command_then_extension_then_system() {
        let c = cfg(MediaSecurity::BestEffort);
        let r = c
            .resolve(&req(Some("disabled"), Some("201"), None))
            .unwrap();
        assert_eq!(
            (r.security, r.source),
            (MediaSecurity::Disabled, PolicySource::Command)
        );
        let r = c.resolve(&req(None, Some("201"), None)).unwrap();
        assert_eq!(
            (r.security, r.source),
            (MediaSecurity::Enforce, PolicySource::Extension)
        );
        let r = c.resolve(&req(None, Some("999"), None)).unwrap();
        assert_eq!(
            (r.security, r.source),
            (MediaSecurity::BestEffort, PolicySource::System)
        );
        let r = c
            .resolve(&req(Some("same-as-system"), Some("201"), None))
            .unwrap();
        assert_eq!(r.security, MediaSecurity::BestEffort);
    }

    #[test]
    fn e129_ignores_leg_settings_and_turns_best_effort_into_enforce() {
        let c = cfg(MediaSecurity::BestEffort);
        let r = c.resolve(&req(None, Some("202"), None)).unwrap();
        assert_eq!(
            (r.security, r.source),
            (MediaSecurity::Enforce, PolicySource::System)
        );
        // Extension 203 says disabled and the command says disabled: E129 ignores both.
        let r = c
            .resolve(&req(Some("disabled"), Some("203"), None))
            .unwrap();
        assert_eq!(r.security, MediaSecurity::Enforce);
        let r = cfg(MediaSecurity::Disabled)
            .resolve(&req(None, Some("203"), None))
            .unwrap();
        assert_eq!(r.security, MediaSecurity::Disabled);
    }

    #[test]
    fn rekeying_devices_are_never_passed_through_and_profiles_limit_suites() {
        let c = cfg(MediaSecurity::Disabled);
        let r = c.resolve(&req(None, Some("204"), None)).unwrap();
        assert_eq!(r.security, MediaSecurity::BestEffort);
        assert!(r.rekeys_on_reinvite);
        let r = c
            .resolve(&req(Some("enforce"), None, Some("b179")))
            .unwrap();
        assert_eq!(r.suites, vec![CryptoSuite::AesCm128HmacSha1_80]);
        let r = c
            .resolve(&req(Some("enforce"), None, Some("radvision-xt")))
            .unwrap();
        assert_eq!(r.for_media("video"), MediaSecurity::Disabled);
        assert_eq!(r.for_media("audio"), MediaSecurity::Enforce);
    }

    #[test]
    fn bad_names_are_clear_errors() {
        let c = cfg(MediaSecurity::Disabled);
        assert_eq!(
            c.resolve(&req(None, None, Some("nokia")))
                .unwrap_err()
                .to_string(),
            "unknown device profile \"nokia\""
        );
        assert_eq!(
            "mandatory".parse::<LegSecurity>().unwrap_err().to_string(),
            "unknown media security level \"mandatory\" (same-as-system, disabled, best-effort, enforce, prefer-direct)"
        );
        let mut only32 = cfg(MediaSecurity::Enforce);
        only32.suites = vec![CryptoSuite::AesCm128HmacSha1_32];
        assert!(matches!(
            only32.resolve(&req(None, None, Some("b179"))),
            Err(PolicyError::NoSuites(_))
        ));
    }

    #[test]
    fn options_map_to_session_parameters() {
        let strict = SecurityOptions::default();
        assert_eq!(strict.session_params(), SessionParams::default());
        assert!(strict.allows(SessionParams::default()));
        assert!(!strict.allows(SessionParams {
            unencrypted_srtcp: true,
            ..SessionParams::default()
        }));
        let lax = SecurityOptions {
            encrypt_rtcp: false,
            ..strict
        };
        assert!(lax.session_params().unencrypted_srtcp);
        assert!(lax.allows(SessionParams {
            unencrypted_srtcp: true,
            ..SessionParams::default()
        }));
        assert!(
            lax.allows(SessionParams::default()),
            "stronger than asked is fine"
        );
        assert!(!lax.allows(SessionParams {
            unauthenticated_srtp: true,
            ..SessionParams::default()
        }));
    }
}
