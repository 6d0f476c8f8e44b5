package worker

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path"
	"sort"
	"sync"
	"time"

	"github.com/backupgen/backupgen/internal/config"
	"github.com/hashicorp/go-multierror"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// Timeouts and retries of an SFTP destination. A server that does not
// answer within sftpDialTimeout at preflight is left out before anything
// is stopped; a connection that stops answering keepalives mid-upload is
// closed, which fails that destination alone.
const (
	sftpDialTimeout   = 15 * time.Second
	sftpDialAttempts  = 3
	sftpRetryDelay    = 2 * time.Second
	sftpKeepalive     = 15 * time.Second
	sftpKeepaliveWait = 30 * time.Second
)

// sftpDest is a Destination in a directory on an SFTP server:
// PATH/HOSTNAME/SERVICE/. The write protocol is the local one (dest.go)
// over the SFTP protocol: a private temp name created with O_EXCL and
// chmod 0600 before the first byte, fsync@openssh.com, the size the server
// reports checked, an optional full read-back, then each of the archive,
// .sha256 and .sig linked to its final name with hardlink@openssh.com
// (link(2): fails when the name exists, so nothing is ever overwritten)
// and the temp name removed. posix-rename@openssh.com is not used: it
// replaces an existing name. A server without hardlink@openssh.com gets
// the plain SSH_FXP_RENAME, which draft-ietf-secsh-filexfer-02 defines as
// failing on an existing name (OpenSSH implements it so), after a check
// that the name is free.
type sftpDest struct {
	url        string // as configured; String
	addr, user string
	dir        string // PATH/HOSTNAME/SERVICE
	name       string // service name
	keyFile    string
	knownHosts string
	readBack   bool
	log        *slog.Logger

	mu     sync.Mutex
	conn   *ssh.Client
	client *sftp.Client
}

var _ Destination = (*sftpDest)(nil)

// newSFTPDest makes the destination of dest (parsed from raw) for the
// service of cfg.
func newSFTPDest(cfg *config.Config, raw string, dest config.Destination, host string, log *slog.Logger) (*sftpDest, error) {
	return &sftpDest{
		url: raw, addr: net.JoinHostPort(dest.Host, dest.Port), user: dest.User,
		dir: path.Join(dest.Path, host, cfg.Name), name: cfg.Name,
		keyFile: cfg.Backup.SFTP.PrivateKeyFile, knownHosts: cfg.Backup.SFTP.KnownHostsFile,
		readBack: cfg.Backup.SFTP.VerifyReadBackOrDefault(), log: log,
	}, nil
}

func (d *sftpDest) String() string { return d.url }

// LightTrust: without verifyReadBack, the archives kept are not re-read
// on every run either (see lightTruster).
func (d *sftpDest) LightTrust() bool { return !d.readBack }

// sftpClient returns the connection, dialling it first if there is none
// (or the last one dropped).
func (d *sftpDest) sftpClient(ctx context.Context) (*sftp.Client, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client != nil {
		return d.client, nil
	}
	cc, err := d.sshConfig()
	if err != nil {
		return nil, err
	}
	var conn *ssh.Client
	for attempt := 1; ; attempt++ {
		conn, err = dialSSH(ctx, d.addr, cc)
		if err == nil || attempt >= sftpDialAttempts || errors.Is(err, errRefused) || ctx.Err() != nil {
			break
		}
		d.log.Warn("sftp connection failed; retrying", keyDestination, d.url, "attempt", attempt, "error", err)
		select {
		case <-time.After(sftpRetryDelay):
		case <-ctx.Done():
		}
	}
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", d.addr, err)
	}
	client, err := sftp.NewClient(conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start sftp on %s: %w", d.addr, err)
	}
	d.conn, d.client = conn, client
	go d.keepalive(conn, client)
	return client, nil
}

// keepalive closes a connection that stops answering, so an upload over a
// dead link fails instead of hanging; the next call dials again.
func (d *sftpDest) keepalive(conn *ssh.Client, client *sftp.Client) {
	closed := make(chan struct{})
	go func() { conn.Wait(); close(closed) }()
	t := time.NewTicker(sftpKeepalive)
	defer t.Stop()
	for {
		select {
		case <-closed:
			d.forget(client)
			return
		case <-t.C:
		}
		answered := make(chan struct{})
		go func() { conn.SendRequest("keepalive@openssh.com", true, nil); close(answered) }()
		select {
		case <-answered:
		case <-closed:
		case <-time.After(sftpKeepaliveWait):
			d.log.Error("sftp server stopped answering; closing the connection", keyDestination, d.url)
			conn.Close()
		}
	}
}

// forget drops client if it is still the current one.
func (d *sftpDest) forget(client *sftp.Client) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client == client {
		client.Close()
		d.conn.Close()
		d.client, d.conn = nil, nil
	}
}

// Close closes the connection (the run's end; tests).
func (d *sftpDest) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client == nil {
		return nil
	}
	d.client.Close()
	err := d.conn.Close()
	d.client, d.conn = nil, nil
	return err
}

// Prepare connects (within sftpDialTimeout, with retries), creates the
// directory and checks that a file can be created in it.
func (d *sftpDest) Prepare(ctx context.Context) (bool, error) {
	c, err := d.sftpClient(ctx)
	if err != nil {
		return false, err
	}
	if err := c.MkdirAll(d.dir); err != nil {
		return false, fmt.Errorf("%s: create %s: %w", d.url, d.dir, err)
	}
	fi, err := c.Lstat(d.dir)
	if err != nil {
		return false, fmt.Errorf("%s: %w", d.url, err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("%s: %s is not a directory", d.url, d.dir)
	}
	probe := path.Join(d.dir, "."+d.name+"-probe-"+randomSuffix())
	f, err := c.OpenFile(probe, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return false, fmt.Errorf("%s: not writable: %w", d.url, err)
	}
	f.Close()
	if err := c.Remove(probe); err != nil {
		return false, fmt.Errorf("%s: remove probe: %w", d.url, err)
	}
	return false, nil
}

// FreeSpace asks statvfs@openssh.com; the key is the server and its file
// system id, so two destinations there share the room. A server without
// the extension reports no limit (the upload fails if it fills up).
func (d *sftpDest) FreeSpace(ctx context.Context) (uint64, string, error) {
	c, err := d.sftpClient(ctx)
	if err != nil {
		return 0, "", err
	}
	if _, ok := c.HasExtension("statvfs@openssh.com"); !ok {
		d.log.Warn("sftp server does not report free space", keyDestination, d.url)
		return math.MaxUint64, "", nil
	}
	st, err := c.StatVFS(d.dir)
	if err != nil {
		return 0, "", fmt.Errorf("%s: statvfs: %w", d.url, err)
	}
	return st.Bavail * st.Frsize, fmt.Sprintf("sftp://%s#%d", d.addr, st.Fsid), nil
}

// ownName reports whether name is an archive name of the service.
func (d *sftpDest) ownName(name string) bool {
	_, ok := parseArchiveName(d.name, name)
	return ok
}

func (d *sftpDest) notOurs(name string) error {
	return fmt.Errorf("%s: not an archive name of %s", name, d.name)
}

// Create creates the private temp file .BASE.tmp-RANDOM (O_EXCL, then
// 0600 before the first byte: the server creates it 0666 &^ its umask).
func (d *sftpDest) Create(ctx context.Context, base string) (Upload, error) {
	if !d.ownName(base) {
		return nil, d.notOurs(base)
	}
	c, err := d.sftpClient(ctx)
	if err != nil {
		return nil, err
	}
	u := &sftpUpload{d: d, c: c, base: base, hash: sha256.New()}
	u.tmp = path.Join(d.dir, "."+base+".tmp-"+randomSuffix())
	if u.file, err = createPrivate(c, u.tmp); err != nil {
		u.tmp = ""
		return nil, fmt.Errorf("%s: %w", d.url, err)
	}
	u.buf = bufio.NewWriterSize(sftpWriter{u}, 1<<20)
	return u, nil
}

// createPrivate creates p, failing if it exists, and makes it 0600.
func createPrivate(c *sftp.Client, p string) (*sftp.File, error) {
	f, err := c.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		c.Remove(p)
		return nil, err
	}
	return f, nil
}

// List lists the service's archives: regular files of the naming pattern
// (the server's READDIR reports lstat, so a symlink is never listed).
func (d *sftpDest) List(ctx context.Context) ([]StoredArchive, error) {
	c, err := d.sftpClient(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := c.ReadDirContext(ctx, d.dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.url, err)
	}
	var out []StoredArchive
	for _, e := range entries {
		if a, ok := parseArchiveName(d.name, e.Name()); ok && e.Mode().IsRegular() {
			out = append(out, a)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	return out, nil
}

// regular checks that p is a regular file (lstat: not a symlink, not a
// FIFO). Between this check and an open, only the server account could
// swap it: unlike a local destination, no service user writes there.
func regular(c *sftp.Client, p string) (os.FileInfo, error) {
	fi, err := c.Lstat(p)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w", p, errNotRegular)
	}
	return fi, nil
}

// Open opens a committed archive for reading at offsets (sftp.File reads
// a range with concurrent requests).
func (d *sftpDest) Open(ctx context.Context, name string) (ArchiveReader, error) {
	if !d.ownName(name) {
		return nil, d.notOurs(name)
	}
	c, err := d.sftpClient(ctx)
	if err != nil {
		return nil, err
	}
	p := path.Join(d.dir, name)
	fi, err := regular(c, p)
	if err != nil {
		return nil, err
	}
	f, err := c.Open(p)
	if err != nil {
		return nil, err
	}
	return &sftpArchive{File: f, c: c, path: p, label: d.url + "/" + name, size: fi.Size()}, nil
}

// sftpArchive is an archive on the server opened for reading.
type sftpArchive struct {
	*sftp.File
	c     *sftp.Client
	path  string
	label string
	size  int64
}

func (a *sftpArchive) Size() int64  { return a.size }
func (a *sftpArchive) Name() string { return a.label }

// ReadSide reads NAME.ext if it is a regular file of at most limit bytes.
func (a *sftpArchive) ReadSide(ext string, limit int64) ([]byte, error) {
	p := a.path + ext
	fi, err := regular(a.c, p)
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d expected", p, fi.Size(), limit)
	}
	f, err := a.c.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// Remove removes the archive, then its .sha256 and .sig (those that are
// regular files). An archive name that is not a regular file is refused.
func (d *sftpDest) Remove(ctx context.Context, name string) error {
	if !d.ownName(name) {
		return d.notOurs(name)
	}
	c, err := d.sftpClient(ctx)
	if err != nil {
		return err
	}
	p := path.Join(d.dir, name)
	if _, err := regular(c, p); err != nil {
		return fmt.Errorf("refused: %w", err)
	}
	if err := c.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var errs *multierror.Error
	for _, side := range []string{p + ".sha256", p + ".sig"} {
		if _, err := regular(c, side); err == nil {
			if err := c.Remove(side); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = multierror.Append(errs, err)
			}
		}
	}
	if errs != nil {
		return fmt.Errorf("%w: %w", errSideFiles, listErr(errs))
	}
	return nil
}

// CleanStale removes the service's temp and probe files a killed run left
// (staleTempRE; regular files only). The service lock is held, and the
// directory is this host's and this service's alone.
func (d *sftpDest) CleanStale(ctx context.Context) error {
	c, err := d.sftpClient(ctx)
	if err != nil {
		return err
	}
	entries, err := c.ReadDirContext(ctx, d.dir)
	if err != nil {
		return err
	}
	re := staleTempRE(d.name)
	var errs *multierror.Error
	for _, e := range entries {
		if !re.MatchString(e.Name()) || !e.Mode().IsRegular() {
			continue
		}
		if err := c.Remove(path.Join(d.dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = multierror.Append(errs, err)
			continue
		}
		d.log.Warn("removed temp file left by an interrupted run", keyDestination, d.url, keyArchive, e.Name())
	}
	return errs.ErrorOrNil()
}
