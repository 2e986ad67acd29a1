//! Registry and options shared by the end-to-end tests.

use crate::{Gateway, SystemOptions};

pub const REGISTRY: &str = "\
account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh
1000001,EM-1,1,5,active,2026-10,45000,,,120
1000002,EM-2,2,6,active,2026-10,045000,012000,,180
1000003,EM-3,3,6,active,2026-10,010000,020000,030000,250
1000004,EM-4,1,5,closed,2026-10,30000,,,100
1000005,EM-5a,1,5,active,,,,,90
1000005,EM-5b,1,5,active,,,,,90
";

/// Accept readings on any day: tests must not depend on today's date.
pub fn any_day() -> Vec<(String, String)> {
    vec![
        ("WINDOW_START_DAY".into(), "1".into()),
        ("WINDOW_END_DAY".into(), "31".into()),
    ]
}

pub fn options(gateway: Gateway) -> SystemOptions {
    SystemOptions {
        gateway,
        smtp_url: None,
        billing_url: None,
        registry_csv: REGISTRY.into(),
        env: any_day(),
        work_in: None,
    }
}
