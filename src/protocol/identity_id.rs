//! IoT Hub's rules for device and module ids, checked without I/O by the service client before
//! it sends a request and by the local hub before it stores an identity.
//!
//! Microsoft Learn, "Understand the identity registry in your IoT hub", device identity
//! properties (`deviceId`) and module identity properties (`moduleId`): a case-sensitive string
//! of up to 128 characters, ASCII 7-bit alphanumerics plus
//! `- . + % _ # * ? ! ( ) , : = @ $ '`. The same page's module table gives module ids the same
//! rule. Anything else (a space, `/`, `&`, non-ASCII) is refused by IoT Hub with
//! `ArgumentInvalid`, so it is refused here before it reaches the wire.

use crate::error::{Error, ErrorKind};

/// The longest device or module id IoT Hub accepts, in characters (ASCII, so bytes too).
pub const MAX_IDENTITY_ID_LEN: usize = 128;

/// The characters allowed in an id besides ASCII letters and digits.
pub const IDENTITY_ID_SPECIAL_CHARACTERS: &str = "-.+%_#*?!(),:=@$'";

/// The rule in words, for error texts.
const RULE: &str = "1 to 128 ASCII letters, digits or - . + % _ # * ? ! ( ) , : = @ $ '";

/// Which kind of id is checked (it names the id in the error text).
#[derive(Clone, Copy)]
enum IdKind {
    Device,
    Module,
}

impl IdKind {
    fn name(self) -> &'static str {
        match self {
            IdKind::Device => "device id",
            IdKind::Module => "module id",
        }
    }
}

fn check(id: &str, kind: IdKind) -> Result<(), Error> {
    let what = kind.name();
    if id.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidIdentityId,
            format!("the {what} is empty; a {what} is {RULE}"),
        ));
    }
    if id.len() > MAX_IDENTITY_ID_LEN {
        return Err(Error::new(
            ErrorKind::InvalidIdentityId,
            format!("the {what} is {} bytes long; a {what} is {RULE}", id.len()),
        ));
    }
    let special = IDENTITY_ID_SPECIAL_CHARACTERS.as_bytes();
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || c.is_ascii() && special.contains(&(*c as u8))))
    {
        return Err(Error::new(
            ErrorKind::InvalidIdentityId,
            format!(
                "the {what} '{}' contains {:?}, which IoT Hub does not allow; a {what} is {RULE}",
                id.escape_debug(),
                bad
            ),
        ));
    }
    Ok(())
}

/// Checks a device id against IoT Hub's rules (see the module documentation).
///
/// An id that breaks them is an [`ErrorKind::InvalidIdentityId`] error naming the first
/// character IoT Hub would refuse, and the rule.
///
/// ```
/// use iothub::protocol::check_device_id;
///
/// assert!(check_device_id("thermostat-1").is_ok());
/// let err = check_device_id("dev 1").unwrap_err();
/// assert_eq!(err.kind(), iothub::ErrorKind::InvalidIdentityId);
/// assert!(err.to_string().contains("' '"));
/// ```
pub fn check_device_id(device_id: &str) -> Result<(), Error> {
    check(device_id, IdKind::Device)
}

/// Checks a module id against IoT Hub's rules, the device id's (see the module
/// documentation); an error is [`ErrorKind::InvalidIdentityId`].
pub fn check_module_id(module_id: &str) -> Result<(), Error> {
    check(module_id, IdKind::Module)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_character_is_allowed() {
        for id in [
            "dev1",
            "A-b.c+d%e_f#g*h?i!j(k)l,m:n=o@p$q'r",
            "$edgeAgent",
            &"x".repeat(MAX_IDENTITY_ID_LEN),
        ] {
            assert!(check_device_id(id).is_ok(), "{id}");
            assert!(check_module_id(id).is_ok(), "{id}");
        }
        for c in IDENTITY_ID_SPECIAL_CHARACTERS.chars() {
            assert!(check_device_id(&format!("a{c}b")).is_ok(), "{c}");
        }
    }

    #[test]
    fn refusals_name_the_character_and_the_rule() {
        let err = check_device_id("dev 1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidIdentityId);
        assert!(err.to_string().contains("' '"), "{err}");
        assert!(err.to_string().contains(RULE), "{err}");
        let err = check_device_id("a/b").unwrap_err();
        assert!(err.to_string().contains("'/'"), "{err}");
        let err = check_module_id("ünï").unwrap_err();
        assert!(err.to_string().contains("module id"), "{err}");
        for bad in ["", "a&b", "a;b", "a\"b", "a\nb", "a<b", "a~b"] {
            assert_eq!(
                check_device_id(bad).unwrap_err().kind(),
                ErrorKind::InvalidIdentityId,
                "{bad:?}"
            );
        }
        let long = "x".repeat(MAX_IDENTITY_ID_LEN + 1);
        assert!(
            check_device_id(&long)
                .unwrap_err()
                .to_string()
                .contains("129")
        );
    }
}
