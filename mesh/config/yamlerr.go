package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yaml.v3's type errors name a line and Go types, not the field: these
// find the field again in the document and say what to write instead.
var (
	yamlTypeMismatch = regexp.MustCompile("^line (\\d+): cannot unmarshal (!!\\w+)(?: `(.*)`)? into (\\S+)$")
	yamlNoSuchField  = regexp.MustCompile(`^line (\d+): field (\S+) not found in type \S+$`)
)

// fieldHints are the fixes of the fields whose type a user is likely to
// get wrong, by field (sequence indexes written [] ).
var fieldHints = map[string]string{
	"routes.table":  "write the table's number: 254 for main (the default), or a table of your own, 1-252 or 256 and up (names from /etc/iproute2/rt_tables are not read)",
	"routes.metric": "write a whole number, 0-4294967294 (default 100)",
	"listen_port":   "write a UDP port, 1-65535 (default 51820)",
	"mtu":           "write a whole number, 1280-9000, or 0 (the default) for the underlay MTU minus 80",
}

// yamlFieldErrors turns yaml.v3's errors about raw into FieldErrors naming
// the field; an error it cannot place is returned with yaml's text.
func yamlFieldErrors(raw []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return errors.New(strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var doc yaml.Node
	_ = yaml.Unmarshal(raw, &doc) // it parsed once: only types were wrong
	nodes := yamlNodes(&doc, "", nil)
	var errs []error
	for _, e := range te.Errors {
		errs = append(errs, yamlFieldError(nodes, e))
	}
	return errors.Join(errs...)
}

// yamlNode is one key or value of the document with its field path.
type yamlNode struct {
	path string
	key  bool
	node *yaml.Node
}

func yamlNodes(n *yaml.Node, path string, out []yamlNode) []yamlNode {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			out = yamlNodes(c, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			out = append(out, yamlNode{path: p, key: true, node: k})
			out = append(out, yamlNode{path: p, node: v})
			out = yamlNodes(v, p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			out = append(out, yamlNode{path: p, node: c})
			out = yamlNodes(c, p, out)
		}
	}
	return out
}

// yamlFieldError places one of yaml.v3's messages.
func yamlFieldError(nodes []yamlNode, msg string) error {
	if m := yamlNoSuchField.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		for _, n := range nodes {
			if n.key && n.node.Line == line && n.node.Value == m[2] {
				return &FieldError{Field: n.path, Msg: fmt.Sprintf("unknown field %s (line %d): check its spelling and indentation", m[2], line)}
			}
		}
		return fmt.Errorf("line %d: unknown field %s (check its spelling and indentation)", line, m[2])
	}
	m := yamlTypeMismatch.FindStringSubmatch(msg)
	if m == nil {
		return errors.New(msg)
	}
	line, _ := strconv.Atoi(m[1])
	tag, value, goType := m[2], strings.TrimSuffix(m[3], "...."), m[4]
	for _, n := range nodes {
		if n.key || n.node.Line != line || n.node.ShortTag() != tag || !strings.HasPrefix(n.node.Value, value) {
			continue
		}
		return &FieldError{Field: n.path, Msg: fmt.Sprintf("%s (line %d): %s", describeNode(n.node), line, typeHint(n.path, n.node, goType))}
	}
	return errors.New(msg)
}

// describeNode says what was written: the value, or its kind.
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a section"
	}
	return strconv.Quote(n.Value)
}

// typeHint says what the field wants instead.
func typeHint(path string, n *yaml.Node, goType string) string {
	if h, ok := fieldHints[sequenceless(path)]; ok {
		return h
	}
	goType = strings.TrimPrefix(goType, "*")
	switch {
	case goType == "int":
		return "write a whole number"
	case goType == "bool":
		return "write true or false"
	case goType == "string":
		return "write a single value, not " + describeNode(n)
	case strings.HasPrefix(goType, "[]"):
		if n.Kind == yaml.ScalarNode {
			return fmt.Sprintf("write a list, e.g. [%s]", n.Value)
		}
		return "write a list of values, e.g. [a, b]"
	case strings.HasPrefix(goType, "config."):
		return "write a section of fields on the lines below it, indented (see examples/dcmesh.yaml)"
	}
	return "see examples/dcmesh.yaml for its form"
}

var sequenceIndex = regexp.MustCompile(`\[\d+\]`)

func sequenceless(path string) string { return sequenceIndex.ReplaceAllString(path, "[]") }
