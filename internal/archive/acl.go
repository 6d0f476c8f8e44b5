package archive

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os/user"
	"sort"
	"strconv"
	"strings"
)

// POSIX ACLs as GNU tar --acls stores them: the text form of acl_to_text(3)
// ("user::rw-\nuser:bob:r--\ngroup::r--\nmask::r--\nother::r--\n") in the
// PAX records SCHILY.acl.access and SCHILY.acl.default. Restore turns the
// text into the kernel's xattr form (system.posix_acl_access/_default).

// Tags of the kernel's ACL xattr format (linux/posix_acl_xattr.h); sorting
// entries by tag then id gives the order the kernel requires.
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20

	aclXattrVersion = 2
	aclUndefinedID  = 0xffffffff

	xattrACLAccess  = "system.posix_acl_access"
	xattrACLDefault = "system.posix_acl_default"
)

type aclEntry struct {
	tag  uint16
	perm uint16
	qual string // user or group name or numeric id, for aclUser/aclGroup
}

// parseACL parses the text form; "" gives no ACL. Comments ("#...") and
// blank lines are ignored; entries are separated by newlines or commas.
func parseACL(text string) ([]aclEntry, error) {
	var out []aclEntry
	counts := map[uint16]int{}
	quals := map[string]bool{}
	for _, line := range strings.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == ',' }) {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		e, err := parseACLEntry(line)
		if err != nil {
			return nil, err
		}
		counts[e.tag]++
		if e.tag == aclUser || e.tag == aclGroup {
			k := strconv.Itoa(int(e.tag)) + ":" + e.qual
			if quals[k] {
				return nil, fmt.Errorf("ACL entry %q repeated", line)
			}
			quals[k] = true
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, nil
	}
	for _, t := range []uint16{aclUserObj, aclGroupObj, aclOther} {
		if counts[t] != 1 {
			return nil, errors.New("ACL needs exactly one user::, group:: and other:: entry")
		}
	}
	if counts[aclMask] > 1 || (counts[aclMask] == 0 && counts[aclUser]+counts[aclGroup] > 0) {
		return nil, errors.New("ACL with named entries needs exactly one mask:: entry")
	}
	return out, nil
}

func parseACLEntry(line string) (aclEntry, error) {
	f := strings.Split(line, ":")
	if len(f) != 3 {
		return aclEntry{}, fmt.Errorf("malformed ACL entry %q", line)
	}
	var e aclEntry
	switch f[0] {
	case "user", "u":
		e.tag = aclUserObj
		if f[1] != "" {
			e.tag = aclUser
		}
	case "group", "g":
		e.tag = aclGroupObj
		if f[1] != "" {
			e.tag = aclGroup
		}
	case "mask", "m":
		e.tag = aclMask
	case "other", "o":
		e.tag = aclOther
	default:
		return e, fmt.Errorf("malformed ACL entry %q: unknown tag", line)
	}
	if (e.tag == aclMask || e.tag == aclOther) && f[1] != "" {
		return e, fmt.Errorf("malformed ACL entry %q: unexpected qualifier", line)
	}
	e.qual = f[1]
	if len(f[2]) > 3 {
		return e, fmt.Errorf("malformed ACL entry %q: permissions", line)
	}
	for _, r := range f[2] {
		var bit uint16
		switch r {
		case 'r':
			bit = 4
		case 'w':
			bit = 2
		case 'x':
			bit = 1
		case '-':
			continue
		default:
			return e, fmt.Errorf("malformed ACL entry %q: permissions", line)
		}
		if e.perm&bit != 0 {
			return e, fmt.Errorf("malformed ACL entry %q: permissions", line)
		}
		e.perm |= bit
	}
	return e, nil
}

// idResolver maps ACL qualifiers to ids: a numeric qualifier is the id, a
// name is looked up on this system (like GNU tar, which stores names).
type idResolver struct {
	users, groups map[string]int
}

func (r *idResolver) id(tag uint16, qual string) (uint32, error) {
	if n, err := strconv.ParseUint(qual, 10, 32); err == nil && n != aclUndefinedID {
		return uint32(n), nil
	}
	cache, kind := r.users, "user"
	if tag == aclGroup {
		cache, kind = r.groups, "group"
	}
	id, ok := cache[qual]
	if !ok {
		id = -1
		var s string
		if tag == aclGroup {
			if g, err := user.LookupGroup(qual); err == nil {
				s = g.Gid
			}
		} else if u, err := user.Lookup(qual); err == nil {
			s = u.Uid
		}
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			id = n
		}
		cache[qual] = id
	}
	if id < 0 {
		return 0, fmt.Errorf("unknown %s %q", kind, qual)
	}
	return uint32(id), nil
}

// aclXattr encodes a parsed ACL as the kernel's xattr value.
func aclXattr(entries []aclEntry, r *idResolver) ([]byte, error) {
	type bin struct {
		tag, perm uint16
		id        uint32
	}
	bs := make([]bin, 0, len(entries))
	for _, e := range entries {
		b := bin{e.tag, e.perm, aclUndefinedID}
		if e.tag == aclUser || e.tag == aclGroup {
			id, err := r.id(e.tag, e.qual)
			if err != nil {
				return nil, err
			}
			b.id = id
		}
		bs = append(bs, b)
	}
	sort.Slice(bs, func(i, j int) bool {
		if bs[i].tag != bs[j].tag {
			return bs[i].tag < bs[j].tag
		}
		return bs[i].id < bs[j].id
	})
	out := binary.LittleEndian.AppendUint32(nil, aclXattrVersion)
	for _, b := range bs {
		out = binary.LittleEndian.AppendUint16(out, b.tag)
		out = binary.LittleEndian.AppendUint16(out, b.perm)
		out = binary.LittleEndian.AppendUint32(out, b.id)
	}
	return out, nil
}
