package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// The decoder walks the Config struct and the TOML document side by side and
// decodes one key at a time, so that one bad value does not hide the next:
// toml.Decode stops at the first type error. The walk also finds unknown
// keys. (toml.MetaData.Undecoded cannot be used here: decoding a table into
// map[string]toml.Primitive marks every key in it as decoded, known or not.)
//
// toml.MetaData in BurntSushi/toml v1.6.0 does not expose key positions. It
// does put the key's position into the ParseError it returns when a
// toml.Unmarshaler fails, so positions are obtained by decoding each key once
// into a probe that always fails. For the tables of an array of tables
// ([[policy]]) that position is ambiguous (the library keeps one per key
// name, not per table), so those get the line of their [[header]] instead,
// found by scanning the text.
type decoder struct {
	md        toml.MetaData
	parsed    bool // the syntax was valid and md is set
	data      []byte
	problems  []Problem
	positions map[string]toml.Position // key path → where its value is
	failed    map[string]bool          // key paths that did not decode
}

// scope says how positions are found for the keys of one table.
type scope struct {
	probe    bool          // ask the library (keys are unique in the file)
	fallback toml.Position // otherwise use this (zero: unknown)
}

// decodeInto decodes data into cfg, which holds the defaults; keys missing
// from data keep them. It returns the decoder for its problems and positions.
func decodeInto(cfg *Config, data []byte) *decoder {
	d := &decoder{
		data:      data,
		positions: map[string]toml.Position{},
		failed:    map[string]bool{},
	}
	var top map[string]toml.Primitive
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&top)
	if err != nil {
		p := Problem{Message: err.Error()}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			p = Problem{Line: pe.Position.Line, Column: pe.Position.Col, Message: "syntax: " + pe.Message}
		}
		d.problems = append(d.problems, p)
		return d
	}
	d.md, d.parsed = md, true
	d.table("", top, reflect.ValueOf(cfg).Elem(), scope{probe: true})
	return d
}

// located returns the position recorded for key or its nearest ancestor
// ("smtp.allowed_networks[1]" → "smtp.allowed_networks", "policy[2].encrypt"
// → "policy[2]").
func (d *decoder) located(key string) toml.Position {
	for key != "" {
		if pos, ok := d.positions[key]; ok {
			return pos
		}
		cut := strings.LastIndexAny(key, ".[")
		if cut < 0 {
			break
		}
		key = key[:cut]
	}
	return toml.Position{}
}

// hasFailed reports whether key or an ancestor failed to decode.
func (d *decoder) hasFailed(key string) bool {
	for key != "" {
		if d.failed[key] {
			return true
		}
		cut := strings.LastIndexAny(key, ".[")
		if cut < 0 {
			break
		}
		key = key[:cut]
	}
	return false
}

func (d *decoder) add(pos toml.Position, key, format string, args ...any) {
	d.problems = append(d.problems, Problem{
		Line: pos.Line, Column: pos.Col, Key: key, Message: fmt.Sprintf(format, args...),
	})
}

type entry struct {
	key  string
	prim toml.Primitive
	raw  any
	pos  toml.Position
}

// table decodes the keys of one TOML table into the struct dst.
func (d *decoder) table(prefix string, prims map[string]toml.Primitive, dst reflect.Value, sc scope) {
	fields := tomlFields(dst.Type())
	entries := make([]entry, 0, len(prims))
	for k, prim := range prims {
		pos, raw := d.probe(prim)
		if _, isTable := raw.(map[string]any); isTable {
			pos.Col = 0 // the library's column for a [table] header is not meaningful
		}
		if !sc.probe {
			pos = sc.fallback
		}
		entries = append(entries, entry{key: k, prim: prim, raw: raw, pos: pos})
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if a.pos.Start != b.pos.Start {
			return a.pos.Start - b.pos.Start
		}
		return strings.Compare(a.key, b.key)
	})
	for _, e := range entries {
		path := joinKey(prefix, e.key)
		if sc.probe && e.pos.Line > 0 {
			d.positions[path] = e.pos
		}
		i, ok := fields[e.key]
		if !ok {
			d.add(e.pos, "", "unknown key %s%s", path, suggestKey(e.key, fields))
			continue
		}
		if !d.value(path, e, dst.Field(i), sc) {
			d.failed[path] = true
		}
	}
}

// value decodes one key into dst and reports whether that worked.
func (d *decoder) value(path string, e entry, dst reflect.Value, sc scope) bool {
	t := dst.Type()
	switch {
	case isTable(t):
		if _, ok := e.raw.(map[string]any); !ok {
			d.add(e.pos, path, "must be a table (got %s)", tomlKind(e.raw))
			return false
		}
		var prims map[string]toml.Primitive
		if err := d.md.PrimitiveDecode(e.prim, &prims); err != nil {
			d.add(e.pos, path, "%s", decodeMessage(err))
			return false
		}
		d.table(path, prims, dst, sc)
		return true

	case t.Kind() == reflect.Slice && isTable(t.Elem()):
		if !isArrayOfTables(e.raw) {
			d.add(e.pos, path, "must be an array of tables, written [[%s]] (got %s)", path, tomlKind(e.raw))
			return false
		}
		var elems []map[string]toml.Primitive
		if err := d.md.PrimitiveDecode(e.prim, &elems); err != nil {
			d.add(e.pos, path, "%s", decodeMessage(err))
			return false
		}
		headers := arrayTableHeaders(d.data, path)
		if len(headers) != len(elems) {
			headers = nil // written inline or in a way we cannot count
		}
		list := reflect.MakeSlice(t, len(elems), len(elems))
		for i, prims := range elems {
			elemPath := fmt.Sprintf("%s[%d]", path, i)
			elemScope := scope{}
			if headers != nil {
				elemScope.fallback = headers[i]
				d.positions[elemPath] = headers[i]
			}
			d.table(elemPath, prims, list.Index(i), elemScope)
		}
		dst.Set(list)
		return true

	default:
		v := reflect.New(t)
		if err := d.md.PrimitiveDecode(e.prim, v.Interface()); err != nil {
			var pe toml.ParseError
			switch {
			case errors.As(err, &pe): // from an UnmarshalText, e.g. Duration
				d.add(e.pos, path, "%s", pe.Message)
			case tomlKind(e.raw) != goKind(t):
				d.add(e.pos, path, "%s", typeMismatch(t, e.raw))
			default:
				d.add(e.pos, path, "%s", decodeMessage(err))
			}
			return false
		}
		dst.Set(v.Elem())
		return true
	}
}

// probe returns where prim's value is in the file and its raw decoded form.
func (d *decoder) probe(prim toml.Primitive) (toml.Position, any) {
	var p positionProbe
	err := d.md.PrimitiveDecode(prim, &p)
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return pe.Position, p.raw
	}
	return toml.Position{}, p.raw
}

// positionProbe captures a raw value and fails, which makes the toml library
// report the position of the key being decoded.
type positionProbe struct{ raw any }

var errProbe = errors.New("position probe")

func (p *positionProbe) UnmarshalTOML(v any) error {
	p.raw = v
	return errProbe
}

var textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()

// isTable reports whether t is decoded from a TOML table key by key.
func isTable(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(textUnmarshalerType)
}

func isArrayOfTables(raw any) bool {
	switch v := raw.(type) {
	case []map[string]any:
		return true
	case []any: // policy = [{...}, {...}]
		for _, e := range v {
			if _, ok := e.(map[string]any); !ok {
				return false
			}
		}
		return true
	}
	return false
}

// tomlFields maps the toml tag of each decodable field of struct t to its index.
func tomlFields(t reflect.Type) map[string]int {
	fields := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		fields[name] = i
	}
	return fields
}

func joinKey(prefix, key string) string {
	if strings.ContainsFunc(key, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	}) {
		key = fmt.Sprintf("%q", key)
	}
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// arrayTableHeaders returns the position of each [[path]] header line, in order.
func arrayTableHeaders(data []byte, path string) []toml.Position {
	re := regexp.MustCompile(`^[ \t]*\[\[[ \t]*` + regexp.QuoteMeta(path) + `[ \t]*\]\]`)
	var (
		headers []toml.Position
		start   int
	)
	for n, line := range bytes.Split(data, []byte("\n")) {
		if re.Match(line) {
			col := bytes.IndexByte(line, '[')
			headers = append(headers, toml.Position{Line: n + 1, Col: col + 1, Start: start + col})
		}
		start += len(line) + 1
	}
	return headers
}

// decodeMessage strips the library's "toml: line N (last key ...): " prefix;
// our own Problem carries the location.
func decodeMessage(err error) string {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "toml: "); ok {
		msg = rest
		if strings.HasPrefix(msg, "line ") || strings.HasPrefix(msg, "(last key ") {
			if _, after, ok := strings.Cut(msg, "): "); ok {
				msg = after
			}
		}
	}
	return msg
}

var durationType = reflect.TypeFor[Duration]()

// goKind names what a Go type accepts, in the words tomlKind uses.
func goKind(t reflect.Type) string {
	if t == durationType {
		return `a duration string like "5m"`
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Bool:
		return "a boolean (true or false)"
	case reflect.Pointer:
		return goKind(t.Elem())
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String {
			return "an array of strings"
		}
		return "an array"
	}
	return t.String()
}

// tomlKind names the type of a raw value as decoded by the toml library.
func tomlKind(raw any) string {
	switch raw.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean (true or false)"
	case time.Time:
		return "a date-time"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	}
	return fmt.Sprintf("a %T", raw)
}

func typeMismatch(t reflect.Type, raw any) string {
	got := tomlKind(raw)
	if elems, ok := raw.([]any); ok && t.Kind() == reflect.Slice {
		for _, e := range elems {
			if k := tomlKind(e); k != goKind(t.Elem()) {
				got = "an array containing " + k
				break
			}
		}
	}
	return fmt.Sprintf("must be %s (got %s)", goKind(t), got)
}

// suggestKey returns ` (did you mean "x"?)` when a known key is a likely
// misspelling of key.
func suggestKey(key string, fields map[string]int) string {
	best, bestDist := "", 3 // suggest only within two edits
	for name := range fields {
		if dist := editDistance(strings.ToLower(key), name); dist < bestDist || dist == bestDist && name < best {
			best, bestDist = name, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
