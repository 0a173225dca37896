//! An independent reading of nginx's own logs: what a person counting the lines by hand
//! would get, without regwatch's parser. Tests compare regwatch's figures with it.

/// What nginx's combined access log says, read here with a plain split on quotes (not with
/// regwatch's parser): `addr - user [time] "METHOD PATH PROTO" status bytes "ref" "agent"`.
#[derive(Debug, Default)]
pub struct Tally {
    pub lines: usize,
    pub counts: Counts,
    /// Blob HEADs answered 200 (a layer the registry has) and otherwise (a new one).
    pub checks_found: usize,
    pub checks_missing: usize,
}

/// The figures regwatch must show.
#[derive(Debug, Default, PartialEq)]
pub struct Counts {
    /// Manifest GET/HEAD and blob GET by anyone but regwatch, not answered 401.
    pub pulls: usize,
    /// Those answered 4xx/5xx.
    pub failed_pulls: usize,
    /// Blob HEADs not answered 401.
    pub checks: usize,
    /// 401 to a request with a user name.
    pub failed_logins: usize,
    /// Lines with regwatch's user agent.
    pub own: usize,
}

/// Now in nginx's `$time_local` form (UTC), for lines a test appends to an access log.
pub fn clf_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
        ))
        .unwrap()
}

pub fn tally(access_log: &std::path::Path) -> Tally {
    let text = std::fs::read_to_string(access_log).unwrap();
    let mut t = Tally::default();
    for line in text.lines() {
        t.lines += 1;
        let parts: Vec<&str> = line.split('"').collect();
        let user = parts[0].split_whitespace().nth(2).unwrap();
        let mut request = parts[1].split(' ');
        let (Some(method), Some(path)) = (request.next(), request.next()) else {
            continue; // "-": a connection closed before its request line
        };
        let status: u16 = parts[2].split_whitespace().next().unwrap().parse().unwrap();
        let agent = parts[5];
        let c = &mut t.counts;
        if agent.starts_with("regwatch/") {
            c.own += 1;
            continue;
        }
        if status == 401 {
            c.failed_logins += usize::from(user != "-");
            continue;
        }
        let manifest = path.contains("/manifests/");
        let blob = path.contains("/blobs/") && !path.contains("/blobs/uploads");
        match method {
            "HEAD" if blob => {
                c.checks += 1;
                if status == 200 {
                    t.checks_found += 1;
                } else {
                    t.checks_missing += 1;
                }
            }
            "GET" | "HEAD" if manifest || blob => {
                c.pulls += 1;
                c.failed_pulls += usize::from(status >= 400);
            }
            _ => {}
        }
    }
    t
}

/// Failed-login lines in nginx's error log (its own wording).
pub fn error_log_logins(error_log: &std::path::Path) -> usize {
    let bytes = std::fs::read(error_log).unwrap();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.contains("\": password mismatch") || l.contains("\" was not found in \""))
        .count()
}
