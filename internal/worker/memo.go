package worker

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/backupgen/backupgen/internal/hostkey"
	"golang.org/x/sys/unix"
)

// The verification memo (issue 15). Retention only counts an archive that
// was hashed and found to match its .sha256 and .sig (checkKept), and that
// used to mean re-reading every kept archive on every run. The memo,
// <stateDirectory>/<name>.verified.json, remembers for each (destination,
// archive) that was fully verified the archive file's identity as fstat
// reports it through the descriptor that was hashed (device, inode, size,
// mtime and ctime in ns), the SHA-256 it was found to have, and when.
//
// checkKept trusts a LOCAL archive without reading it again when its
// record is younger than memoMaxAge, the descriptor it opens has exactly
// the recorded identity, the .sha256 claims the recorded SHA-256 and the
// .sig verifies against it. Why that is sound: the service user owns the
// archive and can write it, but every write, truncate, chmod, chown,
// utimens, link, unlink or rename sets the inode's ctime to now, and
// nobody but root can set a ctime back; a file put in its place has
// another inode (or a new ctime). Two kinds of write leave the ctime as
// it was (a write through a writable shared mapping to an already dirty
// page; a write in the same kernel tick as the change before it): a
// record is only taken where neither can have happened (checkKeptLocal,
// handoverWatch). So a record matches only a file that nobody changed
// since root verified it. The memo itself lives in the state directory,
// which ensureStateDir checks is root's and writable by nobody else (every
// ancestor too), and is written 0600 atomically (temp, fsync,
// rename, fsync of the directory): the service user can neither write nor
// replace it. Anything wrong with it (missing, garbage, another version,
// not root's or not private) means no memo: the full check, as before.
//
// What stat cannot see is bit rot: the disk changing bytes under an
// unchanged inode. A record older than memoMaxAge is therefore not
// trusted, so each kept archive is re-read at least once a week, the
// re-reads spread over the runs as the archives' records age; `verify`
// still reads everything. Remote destinations (S3, SFTP) are checked as
// before: what their servers report is no inode identity, and nothing
// there is beyond the reach of whoever holds the credentials.

// memoMaxAge is how long a record spares an archive its re-read: at least
// once per memoMaxAge every kept local archive is hashed again (bit rot).
const memoMaxAge = 7 * 24 * time.Hour

// memoVersion is the format version of the memo file.
const memoVersion = 1

// maxMemoBytes bounds the memo file (a record is about 300 bytes).
const maxMemoBytes = 16 << 20

func memoPath(stateDir, name string) string {
	return filepath.Join(stateDir, name+".verified.json")
}

// fileIdentity is what fstat says about an archive file; two equal
// identities name the same inode, unchanged in between (see above).
type fileIdentity struct {
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtimeNs"`
	CtimeNs int64  `json:"ctimeNs"`
}

// identityOf fstats f.
func identityOf(f *os.File) (fileIdentity, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fileIdentity{}, &os.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	return fileIdentity{
		Dev: uint64(st.Dev), Ino: uint64(st.Ino), Size: st.Size,
		MtimeNs: st.Mtim.Nano(), CtimeNs: st.Ctim.Nano(),
	}, nil
}

// memoRecord is one verified archive.
type memoRecord struct {
	Destination string `json:"destination"`
	Archive     string `json:"archive"`
	fileIdentity
	SHA256   string    `json:"sha256"`
	Verified time.Time `json:"verified"`
}

type memoFile struct {
	Version int          `json:"version"`
	Records []memoRecord `json:"records"`
}

type memoKey struct{ dest, name string }

// verifyMemo is the memo of one run or command. A nil *verifyMemo is no
// memo: every method is then a no-op, lookup finds nothing.
type verifyMemo struct {
	path     string
	readOnly bool // prune --dry-run, run --dry-run: used, never written
	now      func() time.Time
	log      *slog.Logger
	// hashed, when set, is called for each archive checkKept reads in
	// full (seams.keptHashed).
	hashed func(dest, name string)
	// margin is memoCtimeMargin (tests change it).
	margin time.Duration

	mu    sync.Mutex
	recs  map[memoKey]memoRecord
	dirty bool
}

// loadMemo reads the memo of the service in stateDir. The caller has
// checked the state directory (ensureStateDir, or checkStateDir for a
// read-only command). A memo that cannot be used is logged and treated as
// empty; a writable memo then replaces it on save.
func loadMemo(stateDir, name string, readOnly bool, now func() time.Time, log *slog.Logger) *verifyMemo {
	m := &verifyMemo{path: memoPath(stateDir, name), readOnly: readOnly, now: now, log: log, margin: memoCtimeMargin,
		recs: map[memoKey]memoRecord{}}
	data, err := readMemoFile(m.path)
	if errors.Is(err, os.ErrNotExist) {
		return m
	}
	var mf memoFile
	if err == nil {
		if err = json.Unmarshal(data, &mf); err == nil && mf.Version != memoVersion {
			err = fmt.Errorf("format version %d, this worker reads version %d", mf.Version, memoVersion)
		}
	}
	if err != nil {
		log.Warn("verification memo unusable; kept archives are read in full this time", "path", m.path, "error", err)
		m.dirty = true // replaced by a good one on save
		return m
	}
	for _, r := range mf.Records {
		if _, err := hex.DecodeString(r.SHA256); err != nil || len(r.SHA256) != 64 {
			continue
		}
		m.recs[memoKey{r.Destination, r.Archive}] = r
	}
	return m
}

// loadMemoReadOnly is the memo for a command that only reads (prune
// --dry-run, run --dry-run): used if the state directory passes the
// checks of ensureStateDir as it is, never written; nil (none) otherwise.
func loadMemoReadOnly(stateDir, name string, log *slog.Logger) *verifyMemo {
	if err := checkStateDir(stateDir, false); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("verification memo not used", "error", err)
		}
		return nil
	}
	return loadMemo(stateDir, name, true, time.Now, log)
}

// readMemoFile reads the memo as readPrivateFile does, and only if root
// (the worker's user) owns it and nobody else may read or write it.
func readMemoFile(path string) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return nil, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o077 != 0 {
		return nil, fmt.Errorf("%s: owned by uid %d with mode %04o; only a file of uid %d with mode 0600 is trusted",
			path, st.Uid, st.Mode&0o7777, os.Geteuid())
	}
	return readPrivateFile(path, maxMemoBytes)
}

// lookup returns the SHA-256 recorded for name in dest, if its record
// matches id exactly and is younger than memoMaxAge (and not from the
// future: a clock set back must not stretch a record's life).
func (m *verifyMemo) lookup(dest, name string, id fileIdentity) ([]byte, bool) {
	if m == nil {
		return nil, false
	}
	m.mu.Lock()
	r, ok := m.recs[memoKey{dest, name}]
	m.mu.Unlock()
	if !ok || r.fileIdentity != id {
		return nil, false
	}
	age := m.now().Sub(r.Verified)
	if age < 0 || age > memoMaxAge {
		return nil, false
	}
	sum, err := hex.DecodeString(r.SHA256)
	return sum, err == nil
}

// put records that name in dest, with identity id, was verified to have
// SHA-256 sum, now.
func (m *verifyMemo) put(dest, name string, id fileIdentity, sum []byte) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs[memoKey{dest, name}] = memoRecord{Destination: dest, Archive: name, fileIdentity: id,
		SHA256: hex.EncodeToString(sum), Verified: m.now().UTC()}
	m.dirty = true
}

// drop forgets name in dest.
func (m *verifyMemo) drop(dest, name string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.recs[memoKey{dest, name}]; ok {
		delete(m.recs, memoKey{dest, name})
		m.dirty = true
	}
}

// retain forgets every archive of dest but names (those still there).
func (m *verifyMemo) retain(dest string, names []string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.recs {
		if k.dest == dest && !slices.Contains(names, k.name) {
			delete(m.recs, k)
			m.dirty = true
		}
	}
}

// retainDests forgets every destination but dests (the configured ones).
func (m *verifyMemo) retainDests(dests []string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.recs {
		if !slices.Contains(dests, k.dest) {
			delete(m.recs, k)
			m.dirty = true
		}
	}
}

// save writes the memo atomically (0600, root's) if it changed; a
// read-only memo is never written.
func (m *verifyMemo) save() error {
	if m == nil || m.readOnly {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dirty {
		return nil
	}
	mf := memoFile{Version: memoVersion, Records: make([]memoRecord, 0, len(m.recs))}
	for _, r := range m.recs {
		mf.Records = append(mf.Records, r)
	}
	sort.Slice(mf.Records, func(i, j int) bool {
		a, b := mf.Records[i], mf.Records[j]
		if a.Destination != b.Destination {
			return a.Destination < b.Destination
		}
		return a.Archive < b.Archive
	})
	data, err := json.MarshalIndent(mf, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(m.path, append(data, '\n'), 0o600, owner{uid: -1, gid: -1}); err != nil {
		return fmt.Errorf("write the verification memo %s: %w", m.path, err)
	}
	m.dirty = false
	return nil
}

// saveLogged saves the memo; a failure only costs re-reads next time.
func (m *verifyMemo) saveLogged() {
	if err := m.save(); err != nil {
		m.log.Warn("verification memo not saved; kept archives are read in full next time", "error", err)
	}
}

// checkKeptLocal is checkKept for a local directory with a memo: the
// archive is opened once; its record, if it matches the descriptor's
// fstat, spares the read (see above); otherwise it is hashed in full
// through that descriptor, and the record refreshed or dropped.
//
// A record is refreshed only when the file cannot have changed without a
// new ctime, during the read or after it:
//   - a read lease (F_SETLEASE F_RDLCK, root has CAP_LEASE) was held from
//     before the first fstat to after the second: it is granted only while
//     nobody has the file open for writing (a writable shared mapping
//     included, whose writes to an already dirty page change no time
//     stamp), and any open for writing meanwhile breaks it (that open waits
//     until the check ends);
//   - both fstats agree;
//   - the ctime is at least memoCtimeMargin old: a write after the check
//     then gets a later ctime even where time stamps come from the coarse
//     clock (a kernel tick), which could otherwise repeat the ctime of a
//     change made moments before the check.
func checkKeptLocal(ctx context.Context, key *hostkey.Key, l *localDir, name string, m *verifyMemo) (archiveCheck, bool) {
	af, err := l.Open(ctx, name)
	if err != nil {
		m.drop(l.dir, name)
		return archiveCheck{checksum: checksumInvalid, signature: signatureUnchecked, err: err}, false
	}
	defer af.Close()
	f := af.(*localArchive).File
	_, err = unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_RDLCK)
	leased := err == nil
	if leased {
		defer unix.FcntlInt(f.Fd(), unix.F_SETLEASE, unix.F_UNLCK)
	}
	id, idErr := identityOf(f)
	if idErr == nil && id.Size == af.Size() {
		if sum, ok := m.lookup(l.dir, name, id); ok {
			if c, ok := inspectRemembered(key, af, name, sum); ok {
				return c, true
			}
		}
	}
	if m.hashed != nil {
		m.hashed(l.dir, name)
	}
	c := inspectOpen(ctx, key, af, name, true, nil)
	if !c.trusted() {
		m.drop(l.dir, name)
		return c, false
	}
	after, err := identityOf(f)
	lease, leaseErr := unix.FcntlInt(f.Fd(), unix.F_GETLEASE, 0)
	if leased && leaseErr == nil && lease == unix.F_RDLCK && idErr == nil && err == nil &&
		after == id && id.Size == c.size && ctimeSettled(id, m.margin) {
		m.put(l.dir, name, id, c.sum)
	} else {
		m.drop(l.dir, name)
	}
	return c, true
}

// memoCtimeMargin: a file identity is recorded only once its ctime is at
// least this old (see checkKeptLocal). Time stamps come from a clock that
// advances once per kernel tick (at most 10 ms: HZ >= 100).
const memoCtimeMargin = 50 * time.Millisecond

// ctimeSettled reports whether id's ctime is at least margin in the past.
func ctimeSettled(id fileIdentity, margin time.Duration) bool {
	return time.Since(time.Unix(0, id.CtimeNs)) >= margin
}

// committedIdentifier is an optional capability of an Upload whose
// committed archive has a file identity the memo can record (localUpload).
type committedIdentifier interface {
	// CommittedIdentity is the committed archive's identity, nil when it
	// cannot be vouched for (handoverWatch). Called once, after Commit.
	CommittedIdentity() *fileIdentity
}

// CommittedIdentity: see committedIdentifier.
func (u *localUpload) CommittedIdentity() *fileIdentity {
	defer u.watch.close()
	return u.watch.confirm()
}

// handoverWatch vouches for the identity of a committed archive. Until
// Commit hands the temp file to the service user (fchown, fchmod 0640) it
// is root's and private, and its content is the verified stream; from then
// on the user can open it and write it. A write after the identity is
// recorded changes its ctime (the record will not match), but one between
// the hand-over and the fstat would be recorded as verified content, and
// so would one through a writable mapping made meanwhile. So an inotify
// watch on the inode, set while the file is still private, reports any
// open or modification by anyone from the hand-over to the fstat (the
// worker itself neither opens nor writes the file then: it only changes
// owner, mode and links, IN_ATTRIB); with any such event, or without
// inotify, nothing is recorded and the next run reads the archive in
// full, as before. The fstat is taken once the ctime is memoCtimeMargin
// old (a wait of at most that), so that a later write gets a later ctime.
type handoverWatch struct {
	fd int      // inotify instance, -1: none
	f  *os.File // a duplicate of the temp file's descriptor
}

func watchHandover(f *os.File) *handoverWatch {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil
	}
	// The descriptor's magic link names the inode whatever its name.
	if _, err := unix.InotifyAddWatch(fd, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), unix.IN_OPEN|unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		return nil
	}
	d, err := dupFile(f)
	if err != nil {
		unix.Close(fd)
		return nil
	}
	return &handoverWatch{fd: fd, f: d}
}

// confirm returns the file's identity, nil if the watch saw an open or a
// write (or an overflow) since it was set, or if there is no watch.
func (w *handoverWatch) confirm() *fileIdentity {
	if w == nil || w.fd < 0 {
		return nil
	}
	id, err := identityOf(w.f)
	if err != nil {
		return nil
	}
	if wait := memoCtimeMargin - time.Since(time.Unix(0, id.CtimeNs)); wait > 0 {
		time.Sleep(wait)
		if id, err = identityOf(w.f); err != nil || !ctimeSettled(id, memoCtimeMargin) {
			return nil
		}
	}
	// Read after the fstat: whatever happened before it is queued.
	buf := make([]byte, 4096)
	if _, err := unix.Read(w.fd, buf); err != unix.EAGAIN {
		return nil // an event (IN_OPEN, IN_MODIFY, IN_Q_OVERFLOW), or a failed read
	}
	return &id
}

func (w *handoverWatch) close() {
	if w != nil && w.fd >= 0 {
		unix.Close(w.fd)
		w.f.Close()
		w.fd = -1
	}
}
