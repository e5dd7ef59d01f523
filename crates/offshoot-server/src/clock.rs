//! The time schedules are evaluated at. Production servers read the system clock; debug builds
//! can be given a frozen clock for tests: `OFFSHOOT_DEBUG_CLOCK_FILE` names a file holding Unix
//! milliseconds, read at every look, so a test moves time by rewriting the file. Release builds
//! ignore the variable (the knob does not exist there).

use offshoot_core::UnixMillis;

#[derive(Debug, Clone, Default)]
pub struct Clock {
    #[cfg(debug_assertions)]
    frozen: Option<std::path::PathBuf>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// The system clock, or in a debug build the frozen one `OFFSHOOT_DEBUG_CLOCK_FILE` names.
    pub fn from_environment() -> Clock {
        #[cfg(debug_assertions)]
        if let Some(path) = std::env::var_os("OFFSHOOT_DEBUG_CLOCK_FILE") {
            tracing::warn!(
                "schedules read a frozen clock from {} (OFFSHOOT_DEBUG_CLOCK_FILE, debug builds only)",
                std::path::Path::new(&path).display()
            );
            return Clock { frozen: Some(path.into()) };
        }
        Clock::system()
    }

    pub fn now(&self) -> UnixMillis {
        #[cfg(debug_assertions)]
        if let Some(path) = &self.frozen {
            match std::fs::read_to_string(path).map(|text| text.trim().parse::<UnixMillis>()) {
                Ok(Ok(at)) => return at,
                Ok(Err(error)) => {
                    tracing::error!("{}: not Unix milliseconds: {error}", path.display())
                }
                Err(error) => tracing::error!("{}: {error}", path.display()),
            }
        }
        crate::state::now()
    }
}
