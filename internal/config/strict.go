package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/hashicorp/go-multierror"
)

// encoding/json matches object keys to struct fields case-insensitively
// and lets the last of two equal keys win, so `{"Backup": …}` or a config
// with "paths" given twice would decode without a word. checkKeys walks the
// document's tokens first and reports, with its key path, every key that is
// not spelled exactly as a json tag of the struct it lands in, and every
// key that appears twice in one object. The set of valid keys comes from
// the struct tags themselves, so it cannot drift from Config.

// checkKeys reports key problems in data, which must hold one JSON value
// decoding into a value of type t.
func checkKeys(data []byte, t reflect.Type) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var errs *multierror.Error
	if err := walkValue(dec, t, "", &errs); err != nil {
		// Malformed JSON: the real decode reports it with its offset.
		return nil
	}
	if errs == nil {
		return nil
	}
	errs.ErrorFormat = ListFormat
	return errs
}

// jsonFields maps each json tag name of struct type t to its field type.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

// walkValue consumes one value from dec. t is the Go type it decodes into,
// or nil where that is unknown (the real decode reports type mismatches).
func walkValue(dec *json.Decoder, t reflect.Type, path string, errs **multierror.Error) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		return walkObject(dec, t, path, errs)
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := walkValue(dec, elem, fmt.Sprintf("%s[%d]", path, i), errs); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ']'
		return err
	}
	return nil
}

func walkObject(dec *json.Decoder, t reflect.Type, path string, errs **multierror.Error) error {
	var fields map[string]reflect.Type
	if t != nil && t.Kind() == reflect.Struct {
		fields = jsonFields(t)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return errors.New("object key is not a string")
		}
		kp := key
		if path != "" {
			kp = path + "." + key
		}
		var ft reflect.Type
		switch {
		case seen[key]:
			*errs = multierror.Append(*errs, &FieldError{Key: kp, Msg: "given twice in one object; keep one"})
		case fields != nil:
			var known bool
			if ft, known = fields[key]; !known {
				*errs = multierror.Append(*errs, &FieldError{Key: kp, Msg: unknownKeyMsg(key, fields)})
			}
		}
		seen[key] = true
		if err := walkValue(dec, ft, kp, errs); err != nil {
			return err
		}
	}
	_, err := dec.Token() // '}'
	return err
}

// unknownKeyMsg names the key a wrongly-cased key was meant to be.
func unknownKeyMsg(key string, fields map[string]reflect.Type) string {
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fmt.Sprintf("unknown key; keys are case-sensitive: write %q", name)
		}
	}
	return "unknown key"
}

// readAll reads the whole config, bounded: a config is a few KiB, and a
// runaway file (or a device) must not exhaust memory.
func readAll(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxConfigBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxConfigBytes)
	}
	return data, nil
}

// maxConfigBytes bounds a config file.
const maxConfigBytes = 4 << 20
