//! Reading the logs on the host for the manager's log requests: the tail of a
//! role's (or the agent's own) log files, a search within a time window, and
//! following new lines as they are written, across rotations.
//!
//! A role's files are its `logs/stdout.log`, `logs/stderr.log` and the extra
//! files of its spec (`log_files`), each with its rotated copies `.N` .. `.1`;
//! a set is read oldest copy first, so line order is write order.
//!
//! Time and level of a line come from the role's [`LogFormat`]: its pattern is
//! matched at the start of each line, the `time` group parsed with its chrono
//! format (no offset: the host's local time) and the `level` group mapped through its levels and
//! normalised. A line the pattern does not match continues the previous line
//! (a stack trace, a wrapped message): it inherits that line's time and level.
//! Lines before the first matching line of a file inherit the last time of the
//! previous (older) file of the set; only when nothing tells (no format, or no
//! earlier time anywhere) a line takes its file's modification time, which is
//! when its last line was written, so windows select whole files then.
//!
//! Reading streams: files are read through a 64 KiB buffer with one reusable
//! line buffer; a line becomes a [`LogLine`] (an allocation) only when it
//! matches. Lines leave in batches of at most [`BATCH_LINES`] lines or
//! [`BATCH_BYTES`] bytes.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::TimeZone;
use regex::bytes::Regex;

use crate::files;
use crate::roles::{LogFormat, RoleSpec};

/// Lines sent in one batch at most.
pub const BATCH_LINES: usize = 256;
/// Bytes of line text in one batch at most (a batch holds at least one line).
pub const BATCH_BYTES: usize = 64 * 1024;
/// How long a matched line waits for its batch to fill before it is sent
/// anyway: a search of sparse matches shows its first ones at once.
pub const BATCH_DELAY: Duration = Duration::from_millis(100);
/// Lines read between two looks at the clock (a batch waiting, a deadline).
const CLOCK_EVERY: u64 = 4096;
/// Lines in a whole reply when the request names no limit.
pub const DEFAULT_LIMIT: usize = 10_000;
/// How long a request may take when it names no timeout (not when following).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often followed files are checked for new lines.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// The agent's own log, relative to the data directory.
pub const AGENT_LOG: &str = "logs/agent.log";
/// Rotated copies of a role's extra log files looked at (the role rotates
/// them itself; its naming is unknown beyond `.N`).
const EXTRA_ROTATED: usize = 9;

/// Which output a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
    /// A file the role writes itself.
    File,
    /// The agent's own log.
    Agent,
}

/// A normalised log level; the order is severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    /// `error`, `warn`, `info`, `debug`, `trace` and their usual synonyms
    /// (`warning`, `fatal`, `crit`, `notice`, `verbose`, ...), any case.
    pub fn parse(text: &str) -> Option<Level> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "error" | "err" | "fatal" | "crit" | "critical" | "alert" | "emerg" | "emergency" | "severe" => {
                Level::Error
            }
            "warn" | "warning" => Level::Warn,
            "info" | "notice" | "information" => Level::Info,
            "debug" | "verbose" | "fine" => Level::Debug,
            "trace" | "finer" | "finest" => Level::Trace,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// One line as it leaves the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Empty for the agent's own log.
    pub role_id: String,
    /// Relative to the role directory (to the data directory for the agent's log).
    pub file: String,
    /// 1-based within `file`.
    pub line_number: u64,
    /// 0 when nothing tells.
    pub time_unix_ms: i64,
    pub stream: Stream,
    pub level: Option<Level>,
    pub text: String,
}

/// What the manager asked for (`LogRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRequest {
    pub request_id: String,
    pub role_ids: Vec<String>,
    pub agent_log: bool,
    /// Empty: every stream.
    pub streams: Vec<Stream>,
    /// 0: unbounded.
    pub since_unix_ms: i64,
    pub until_unix_ms: i64,
    pub pattern: String,
    pub min_level: String,
    pub tail: u32,
    pub limit: u32,
    pub follow: bool,
    pub timeout_ms: u64,
}

/// The last part of a reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplyEnd {
    pub error: String,
    pub truncated: bool,
    pub scanned_bytes: u64,
    pub manifest_json: String,
}

/// A reply as it is streamed to the manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyPart {
    Lines(Vec<LogLine>),
    Archive(Vec<u8>),
    End(ReplyEnd),
}

/// The manager ended the reply (nobody reads it any more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// Where the lines go: `Err(Gone)` stops the reader.
pub trait LineSink {
    fn send(&mut self, lines: Vec<LogLine>) -> Result<(), Gone>;
}

impl LineSink for tokio::sync::mpsc::Sender<ReplyPart> {
    fn send(&mut self, lines: Vec<LogLine>) -> Result<(), Gone> {
        self.blocking_send(ReplyPart::Lines(lines)).map_err(|_| Gone)
    }
}

/// The lines of the file at `path` whose time is within `[since, until)`
/// (0: unbounded), each ending in a newline, as [`scan`] would time them;
/// and the bytes read.
pub fn lines_in_window(
    path: &Path,
    parser: Option<&LineParser>,
    since_unix_ms: i64,
    until_unix_ms: i64,
) -> std::io::Result<(Vec<u8>, u64)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    let filter = Filter { since_unix_ms, until_unix_ms, ..Filter::default() };
    let mut out = Vec::new();
    let mut cursor = Cursor::default();
    let (consumed, _) = read_lines(file, parser, &mut cursor, mtime_ms(&meta), true, None, |line| {
        let (time, level) = line.header();
        if filter.header_matches(time, level) {
            out.extend_from_slice(line.text);
            out.push(b'\n');
        }
        Ok(true)
    })
    .map_err(|_| std::io::Error::other("read stopped"))?;
    Ok((out, consumed))
}

impl LineSink for Vec<LogLine> {
    fn send(&mut self, lines: Vec<LogLine>) -> Result<(), Gone> {
        self.extend(lines);
        Ok(())
    }
}

/// A compiled [`LogFormat`].
#[derive(Debug)]
pub struct LineParser {
    pattern: Regex,
    /// The chrono format, parsed once.
    time_items: Vec<chrono::format::Item<'static>>,
    levels: BTreeMap<String, Level>,
    has_time: bool,
    has_level: bool,
    zone: Zone,
}

/// How a time without an offset is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    /// The host's local time (`TZ`, else `/etc/localtime`): the role runs
    /// on this host and writes its clock's time, as Redis and log4j do.
    Local,
    /// A fixed offset from UTC.
    Fixed(chrono::FixedOffset),
}

/// What the format read at the start of a line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub time_unix_ms: Option<i64>,
    pub level: Option<Level>,
}

impl LineParser {
    /// Compiles the format's pattern (anchored at the line start).
    pub fn new(format: &LogFormat) -> Result<LineParser, String> {
        LineParser::with_zone(format, Zone::Local)
    }

    /// [`LineParser::new`], reading times without an offset in `zone`.
    pub fn with_zone(format: &LogFormat, zone: Zone) -> Result<LineParser, String> {
        let anchored =
            if format.pattern.starts_with('^') { format.pattern.clone() } else { format!("^(?:{})", format.pattern) };
        let pattern = Regex::new(&anchored)
            .map_err(|e| format!("log format {:?}: pattern does not compile: {e}", format.name))?;
        let names: Vec<&str> = pattern.capture_names().flatten().collect();
        let levels = format.levels.iter().filter_map(|(k, v)| Level::parse(v).map(|l| (k.clone(), l))).collect();
        let time_items = chrono::format::StrftimeItems::new(&format.time_format)
            .parse_to_owned()
            .map_err(|e| format!("log format {:?}: time format {:?}: {e}", format.name, format.time_format))?;
        Ok(LineParser {
            has_time: names.contains(&"time") && !format.time_format.is_empty(),
            has_level: names.contains(&"level"),
            pattern,
            time_items,
            levels,
            zone,
        })
    }

    /// Whether `line` starts a new entry (else it continues the previous one).
    pub fn is_header(&self, line: &[u8]) -> bool {
        self.pattern.is_match(line)
    }

    /// `text` read with the format's time format: with its offset if it has
    /// one, else in the parser's zone.
    pub fn parse_time(&self, text: &str) -> Option<i64> {
        let mut parsed = chrono::format::Parsed::new();
        chrono::format::parse(&mut parsed, text.trim(), self.time_items.iter()).ok()?;
        if parsed.offset().is_some() {
            return parsed.to_datetime().ok().map(|t| t.timestamp_millis());
        }
        let naive = parsed.to_naive_datetime_with_offset(0).ok()?;
        let t = match self.zone {
            Zone::Local => chrono::Local.from_local_datetime(&naive).earliest().map(|t| t.timestamp_millis()),
            Zone::Fixed(offset) => offset.from_local_datetime(&naive).earliest().map(|t| t.timestamp_millis()),
        };
        // A local time skipped by a DST change: read it as UTC rather than lose it.
        Some(t.unwrap_or_else(|| naive.and_utc().timestamp_millis()))
    }

    /// The header of `line`, or `None` when the pattern does not match (the
    /// line continues the previous one).
    pub fn parse(&self, line: &[u8]) -> Option<Header> {
        let caps = self.pattern.captures(line)?;
        let mut header = Header::default();
        if self.has_time
            && let Some(m) = caps.name("time")
            && let Ok(text) = std::str::from_utf8(m.as_bytes())
        {
            header.time_unix_ms = self.parse_time(text);
        }
        if self.has_level
            && let Some(m) = caps.name("level")
            && let Ok(text) = std::str::from_utf8(m.as_bytes())
        {
            header.level = self.levels.get(text).copied().or_else(|| Level::parse(text));
        }
        Some(header)
    }
}

/// A set of files: the current one and its rotated copies.
#[derive(Clone, Debug)]
pub struct FileSet {
    pub role_id: String,
    pub stream: Stream,
    /// The current file; rotated copies are `path.1` .. `path.rotated`.
    pub path: PathBuf,
    /// Its name in replies (relative to the role directory).
    pub name: String,
    pub rotated: usize,
    pub parser: Option<Arc<LineParser>>,
}

impl FileSet {
    /// Existing files of the set, oldest first: (path, name in replies).
    pub fn files(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        for n in (1..=self.rotated).rev() {
            let p = files::numbered(&self.path, n);
            if p.is_file() {
                out.push((p, format!("{}.{n}", self.name)));
            }
        }
        if self.path.is_file() {
            out.push((self.path.clone(), self.name.clone()));
        }
        out
    }
}

/// The file sets of `role` on disk under `data_dir`, limited to `streams`
/// (empty: all); an error names a bad log format.
pub fn role_file_sets(data_dir: &Path, role: &RoleSpec, streams: &[Stream]) -> Result<Vec<FileSet>, String> {
    let dir = files::role_dir(data_dir, &role.role_id).map_err(|e| e.to_string())?;
    let parser = match &role.log.format {
        Some(f) if !f.pattern.is_empty() => Some(Arc::new(LineParser::new(f)?)),
        _ => None,
    };
    let keep = files::LogRotation::default().with_spec(&role.log).keep;
    let wanted = |s: Stream| streams.is_empty() || streams.contains(&s);
    let mut sets = Vec::new();
    for (stream, name) in [(Stream::Stdout, files::STDOUT_LOG), (Stream::Stderr, files::STDERR_LOG)] {
        if wanted(stream) {
            sets.push(FileSet {
                role_id: role.role_id.clone(),
                stream,
                path: dir.join(name),
                name: name.to_owned(),
                rotated: keep,
                parser: parser.clone(),
            });
        }
    }
    if wanted(Stream::File) {
        for name in &role.log_files {
            if crate::roles::check_file_path(name).is_err() && !name.starts_with("logs/") {
                continue;
            }
            if Path::new(name).components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                continue;
            }
            sets.push(FileSet {
                role_id: role.role_id.clone(),
                stream: Stream::File,
                path: dir.join(name),
                name: name.clone(),
                rotated: EXTRA_ROTATED,
                parser: parser.clone(),
            });
        }
    }
    Ok(sets)
}

/// The agent's own log as a file set.
pub fn agent_file_set(data_dir: &Path) -> FileSet {
    FileSet {
        role_id: String::new(),
        stream: Stream::Agent,
        path: data_dir.join(AGENT_LOG),
        name: AGENT_LOG.to_owned(),
        rotated: crate::agent_log::KEEP,
        parser: Some(Arc::new(crate::agent_log::line_parser())),
    }
}

/// The compiled filters of a request.
#[derive(Debug, Default)]
pub struct Filter {
    pub since_unix_ms: i64,
    pub until_unix_ms: i64,
    pub pattern: Option<Regex>,
    pub min_level: Option<Level>,
}

impl Filter {
    /// Checks the request's pattern and level; an error says which is bad.
    pub fn new(since: i64, until: i64, pattern: &str, min_level: &str) -> Result<Filter, String> {
        let pattern = if pattern.is_empty() {
            None
        } else {
            Some(Regex::new(pattern).map_err(|e| format!("pattern {pattern:?} does not compile: {e}"))?)
        };
        let min_level =
            if min_level.is_empty() {
                None
            } else {
                Some(Level::parse(min_level).ok_or_else(|| {
                    format!("unknown level {min_level:?} (expected error, warn, info, debug or trace)")
                })?)
            };
        Ok(Filter { since_unix_ms: since, until_unix_ms: until, pattern, min_level })
    }

    fn in_window(&self, t: i64) -> bool {
        (self.since_unix_ms == 0 || t >= self.since_unix_ms) && (self.until_unix_ms == 0 || t < self.until_unix_ms)
    }

    /// Whether the line's text passes (checked first: it needs no header).
    fn text_matches(&self, text: &[u8]) -> bool {
        self.pattern.as_ref().is_none_or(|p| p.is_match(text))
    }

    /// Whether a line of this time and level passes.
    fn header_matches(&self, time: i64, level: Option<Level>) -> bool {
        self.in_window(time) && self.min_level.is_none_or(|min| level.is_some_and(|l| l >= min))
    }

    fn matches(&self, line: &mut Offered<'_>) -> bool {
        if !self.text_matches(line.text) {
            return false;
        }
        let (time, level) = line.header();
        self.header_matches(time, level)
    }
}

/// How a scan ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    pub truncated: bool,
    pub timed_out: bool,
    pub scanned_bytes: u64,
    pub gone: bool,
}

/// Batches lines for a sink and counts them against the limit.
pub struct Batcher<'a, S: LineSink> {
    sink: &'a mut S,
    batch: Vec<LogLine>,
    bytes: usize,
    sent: usize,
    limit: usize,
    /// When the oldest line of the batch came.
    since: Option<Instant>,
}

impl<'a, S: LineSink> Batcher<'a, S> {
    pub fn new(sink: &'a mut S, limit: usize) -> Self {
        Batcher { sink, batch: Vec::new(), bytes: 0, sent: 0, limit, since: None }
    }

    /// Whether another line fits under the limit.
    pub fn full(&self) -> bool {
        self.sent >= self.limit
    }

    pub fn push(&mut self, line: LogLine) -> Result<(), Gone> {
        if self.batch.is_empty() {
            self.since = Some(Instant::now());
        }
        self.bytes += line.text.len();
        self.batch.push(line);
        self.sent += 1;
        if self.batch.len() >= BATCH_LINES || self.bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends the batch if its oldest line waited [`BATCH_DELAY`].
    pub fn poll(&mut self) -> Result<(), Gone> {
        match self.since {
            Some(t) if t.elapsed() >= BATCH_DELAY => self.flush(),
            _ => Ok(()),
        }
    }

    pub fn flush(&mut self) -> Result<(), Gone> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        self.since = None;
        self.sink.send(std::mem::take(&mut self.batch))
    }
}

/// Per-file-set reading state carried from one file to the next and, when
/// following, from one poll to the next.
///
/// The header of a line is worked out only when a line needs it (it passed
/// the pattern, or a window needs its time): until then the cursor keeps
/// the last header line's bytes. A search for a rare pattern thus runs the
/// format's pattern on each line but parses few times.
#[derive(Debug, Default, Clone)]
struct Cursor {
    time: Option<i64>,
    level: Option<Level>,
    /// The last header line not read yet.
    pending: Vec<u8>,
    has_pending: bool,
}

impl Cursor {
    fn resume(time: Option<i64>, level: Option<Level>) -> Cursor {
        Cursor { time, level, ..Cursor::default() }
    }

    /// Notes `line` when it starts an entry.
    fn see(&mut self, parser: Option<&LineParser>, line: &[u8]) {
        if let Some(p) = parser
            && p.is_header(line)
        {
            self.pending.clear();
            self.pending.extend_from_slice(line);
            self.has_pending = true;
        }
    }

    /// Reads the pending header line, if any, into time and level.
    fn resolve(&mut self, parser: Option<&LineParser>) {
        if !std::mem::take(&mut self.has_pending) {
            return;
        }
        if let Some(h) = parser.and_then(|p| p.parse(&self.pending)) {
            if h.time_unix_ms.is_some() {
                self.time = h.time_unix_ms;
            }
            self.level = h.level;
        }
    }
}

/// A line [`read_lines`] offers: its text, and its time and level on demand.
struct Offered<'a> {
    n: u64,
    text: &'a [u8],
    cursor: &'a mut Cursor,
    parser: Option<&'a LineParser>,
    fallback_time: i64,
}

impl Offered<'_> {
    /// The line's time (its entry's, else the fallback) and level.
    fn header(&mut self) -> (i64, Option<Level>) {
        self.cursor.resolve(self.parser);
        (self.cursor.time.unwrap_or(self.fallback_time), self.cursor.level)
    }
}

fn mtime_ms(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Reads `reader` (positioned at line `first_line - 1`) line by line: every
/// complete line is given its header and offered to `each`; returns the
/// bytes consumed (a trailing line without newline is left unless `partial`).
#[allow(clippy::too_many_arguments)]
fn read_lines<R: Read>(
    reader: R,
    parser: Option<&LineParser>,
    cursor: &mut Cursor,
    fallback_time: i64,
    partial: bool,
    deadline: Option<Instant>,
    mut each: impl FnMut(&mut Offered<'_>) -> Result<bool, Gone>,
) -> Result<(u64, bool), Gone> {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut buf = Vec::with_capacity(1024);
    let mut consumed = 0u64;
    let mut n = 0u64;
    loop {
        buf.clear();
        let read = match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return Ok((consumed, false)),
            Ok(read) => read,
        };
        if buf.last() != Some(&b'\n') && !partial {
            return Ok((consumed, false));
        }
        consumed += read as u64;
        n += 1;
        let mut line: &[u8] = &buf;
        while let [rest @ .., b'\n' | b'\r'] = line {
            line = rest;
        }
        cursor.see(parser, line);
        if !each(&mut Offered { n, text: line, cursor, parser, fallback_time })? {
            return Ok((consumed, true));
        }
        if n.is_multiple_of(CLOCK_EVERY) && deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok((consumed, true));
        }
    }
}

/// Builds a line to send.
fn log_line(set: &FileSet, name: &str, n: u64, time: i64, level: Option<Level>, text: &[u8]) -> LogLine {
    LogLine {
        role_id: set.role_id.clone(),
        file: name.to_owned(),
        line_number: n,
        time_unix_ms: time,
        stream: set.stream,
        level,
        text: String::from_utf8_lossy(text).into_owned(),
    }
}

/// Where following resumes in a set's current file.
#[derive(Debug, Clone)]
pub struct FollowPoint {
    inode: u64,
    /// The inode of the rotated copy `.1` (0: none): a new copy means a
    /// rotation even when the truncated file already grew past `offset`.
    copy_inode: u64,
    offset: u64,
    line: u64,
    cursor_time: Option<i64>,
    cursor_level: Option<Level>,
}

/// Sends the lines of `sets` that pass `filter` (the last `tail` of each set
/// when `tail > 0`), at most `limit` in all; returns how it ended and, per
/// set, where a follow resumes. `deadline` is `None` only for a follow.
pub fn scan<S: LineSink>(
    sets: &[FileSet],
    filter: &Filter,
    tail: usize,
    limit: usize,
    deadline: Option<Instant>,
    sink: &mut S,
) -> (ScanOutcome, Vec<Option<FollowPoint>>) {
    let mut outcome = ScanOutcome::default();
    let mut batcher = Batcher::new(sink, limit);
    let mut points = Vec::new();
    for set in sets {
        let mut cursor = Cursor::default();
        let mut ring: VecDeque<LogLine> = VecDeque::new();
        let mut point = None;
        for (path, name) in set.files() {
            let Ok(mut file) = File::open(&path) else { continue };
            let Ok(meta) = file.metadata() else { continue };
            cursor.resolve(set.parser.as_deref());
            let fallback = cursor.time.unwrap_or_else(|| mtime_ms(&meta));
            let is_current = path == set.path;
            let mut stop = false;
            let mut last_n = 0;
            let result = read_lines(
                &mut file,
                set.parser.as_deref(),
                &mut cursor,
                fallback,
                // A last line still being written is left for a follow
                // (no deadline) to send whole; otherwise it is sent as it is.
                !is_current || deadline.is_some(),
                deadline,
                |line| {
                    let n = line.n;
                    last_n = n;
                    if n.is_multiple_of(CLOCK_EVERY) {
                        batcher.poll()?;
                    }
                    if !filter.matches(line) {
                        return Ok(true);
                    }
                    let (time, level) = line.header();
                    let text = line.text;
                    if tail > 0 {
                        if ring.len() == tail {
                            ring.pop_front();
                        }
                        ring.push_back(log_line(set, &name, n, time, level, text));
                        return Ok(true);
                    }
                    if batcher.full() {
                        outcome.truncated = true;
                        stop = true;
                        return Ok(false);
                    }
                    batcher.push(log_line(set, &name, n, time, level, text))?;
                    Ok(true)
                },
            );
            match result {
                Err(Gone) => {
                    outcome.gone = true;
                    return (outcome, points);
                }
                Ok((consumed, early)) => {
                    outcome.scanned_bytes += consumed;
                    if early && !stop {
                        outcome.timed_out = true;
                    }
                    if is_current {
                        cursor.resolve(set.parser.as_deref());
                        point = Some(FollowPoint {
                            inode: meta.ino(),
                            copy_inode: copy_inode(&set.path),
                            offset: consumed,
                            line: last_n,
                            cursor_time: cursor.time,
                            cursor_level: cursor.level,
                        });
                    }
                }
            }
            if stop || outcome.timed_out {
                break;
            }
        }
        for line in ring {
            if batcher.full() {
                outcome.truncated = true;
                break;
            }
            if batcher.push(line).is_err() {
                outcome.gone = true;
                return (outcome, points);
            }
        }
        if point.is_none() {
            // Not there yet: follow it from its start once it appears.
            point = Some(FollowPoint {
                inode: 0,
                copy_inode: copy_inode(&set.path),
                offset: 0,
                line: 0,
                cursor_time: cursor.time,
                cursor_level: None,
            });
        }
        points.push(point);
        if outcome.truncated || outcome.timed_out {
            break;
        }
    }
    if batcher.flush().is_err() {
        outcome.gone = true;
    }
    (outcome, points)
}

/// After [`scan`]: sends new lines of each set's current file as they are
/// written, polling every [`FOLLOW_POLL`], until the sink is gone (or
/// `stop()` says so: a sink that sends only lines notices a gone manager
/// only when lines flow, so `stop` should check the channel). A file that shrank or was replaced (another inode) was
/// rotated, and so was it when its copy `.1` is another file than at the last
/// poll: the rest of the copy `.1` is read first (lines written
/// between the last poll and the rotation), then the new file from its start.
pub fn follow<S: LineSink>(
    sets: &[FileSet],
    mut points: Vec<Option<FollowPoint>>,
    filter: &Filter,
    sink: &mut S,
    mut stop: impl FnMut() -> bool,
) {
    loop {
        if stop() {
            return;
        }
        let mut batcher = Batcher::new(sink, usize::MAX);
        for (set, point) in sets.iter().zip(points.iter_mut()) {
            let Some(p) = point else { continue };
            if follow_once(set, p, filter, &mut batcher).is_err() {
                return;
            }
        }
        if batcher.flush().is_err() {
            return;
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

fn copy_inode(path: &Path) -> u64 {
    std::fs::metadata(files::numbered(path, 1)).map_or(0, |m| m.ino())
}

fn follow_once<S: LineSink>(
    set: &FileSet,
    p: &mut FollowPoint,
    filter: &Filter,
    batcher: &mut Batcher<'_, S>,
) -> Result<(), Gone> {
    let Ok(meta) = std::fs::metadata(&set.path) else { return Ok(()) };
    let copy = copy_inode(&set.path);
    let rotated =
        (p.inode != 0 && meta.ino() != p.inode) || meta.len() < p.offset || (copy != 0 && copy != p.copy_inode);
    p.copy_inode = copy;
    if rotated {
        // The copy `.1` holds what the old file had; read the part we missed.
        let copy = files::numbered(&set.path, 1);
        if let Ok(mut f) = File::open(&copy)
            && f.metadata().is_ok_and(|m| m.len() > p.offset)
            && f.seek(SeekFrom::Start(p.offset)).is_ok()
        {
            let name = format!("{}.1", set.name);
            read_from(set, &name, f, p, filter, batcher, true)?;
        }
        p.offset = 0;
        p.line = 0;
    }
    p.inode = meta.ino();
    if meta.len() == p.offset {
        return Ok(());
    }
    let Ok(mut f) = File::open(&set.path) else { return Ok(()) };
    if f.seek(SeekFrom::Start(p.offset)).is_err() {
        return Ok(());
    }
    let name = set.name.clone();
    let consumed = read_from(set, &name, f, p, filter, batcher, false)?;
    p.offset += consumed;
    Ok(())
}

fn read_from<S: LineSink>(
    set: &FileSet,
    name: &str,
    f: File,
    p: &mut FollowPoint,
    filter: &Filter,
    batcher: &mut Batcher<'_, S>,
    partial: bool,
) -> Result<u64, Gone> {
    let mut cursor = Cursor::resume(p.cursor_time, p.cursor_level);
    let first = p.line;
    let mut last = 0;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let (consumed, _) = read_lines(f, set.parser.as_deref(), &mut cursor, now, partial, None, |line| {
        last = line.n;
        if filter.matches(line) {
            let (time, level) = line.header();
            batcher.push(log_line(set, name, first + line.n, time, level, line.text))?;
        }
        Ok(true)
    })?;
    cursor.resolve(set.parser.as_deref());
    p.line = first + last;
    p.cursor_time = cursor.time;
    p.cursor_level = cursor.level;
    Ok(consumed)
}

/// Runs a log request to its end on the calling (blocking) thread: the lines
/// go to `sink`; the returned end says why it stopped short, if it did.
pub fn answer<S: LineSink>(
    request: &LogRequest,
    data_dir: Option<&Path>,
    roles: &[RoleSpec],
    sink: &mut S,
    mut stop: impl FnMut() -> bool,
) -> ReplyEnd {
    let mut errors = Vec::new();
    let filter = match Filter::new(request.since_unix_ms, request.until_unix_ms, &request.pattern, &request.min_level) {
        Ok(f) => f,
        Err(e) => return ReplyEnd { error: e, ..ReplyEnd::default() },
    };
    let mut sets = Vec::new();
    for id in &request.role_ids {
        match (roles.iter().find(|r| r.role_id == *id), data_dir) {
            (Some(role), Some(dir)) => match role_file_sets(dir, role, &request.streams) {
                Ok(s) => sets.extend(s),
                Err(e) => errors.push(format!("role {id}: {e}")),
            },
            _ => errors.push(format!("unknown role {id} on this host")),
        }
    }
    if request.agent_log {
        match data_dir {
            Some(dir) => sets.push(agent_file_set(dir)),
            None => errors.push("this agent keeps no log file (no data directory)".to_owned()),
        }
    }
    let limit = if request.limit == 0 { DEFAULT_LIMIT } else { request.limit as usize };
    let timeout = if request.timeout_ms == 0 { DEFAULT_TIMEOUT } else { Duration::from_millis(request.timeout_ms) };
    let deadline = (!request.follow).then(|| Instant::now() + timeout);
    let (outcome, points) = scan(&sets, &filter, request.tail as usize, limit, deadline, sink);
    if outcome.timed_out {
        errors.push(format!("timed out after {}", humantime::format_duration(timeout)));
    }
    if request.follow && !outcome.gone {
        follow(&sets, points, &filter, sink, &mut stop);
    }
    ReplyEnd {
        error: errors.join("; "),
        truncated: outcome.truncated || outcome.timed_out,
        scanned_bytes: outcome.scanned_bytes,
        manifest_json: String::new(),
    }
}
