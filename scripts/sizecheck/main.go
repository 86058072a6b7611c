// Command sizecheck lists the non-test Go files over a line budget and the
// functions over a length budget (the project's: 500 and 80 lines), for
// scripts/ci-lint. Length is the go/ast declaration's span. A function whose
// body is a single return of a composite literal (a declarative table, such
// as a CLI command) is not counted. It exits 1 with -fail when anything is
// over budget.
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type item struct {
	lines int
	what  string
}

func main() {
	maxFile := flag.Int("file", 500, "line budget of a non-test file")
	maxFunc := flag.Int("func", 80, "line budget of a function")
	fail := flag.Bool("fail", false, "exit 1 when something is over budget")
	flag.Parse()
	root := "."
	if flag.NArg() > 0 {
		root = flag.Arg(0)
	}
	files, funcs, err := scan(root, *maxFile, *maxFunc)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sizecheck:", err)
		os.Exit(2)
	}
	report(fmt.Sprintf("files over %d lines", *maxFile), files)
	report(fmt.Sprintf("functions over %d lines", *maxFunc), funcs)
	if *fail && len(files)+len(funcs) > 0 {
		os.Exit(1)
	}
}

func scan(root string, maxFile, maxFunc int) (files, funcs []item, err error) {
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && p != root || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return err
		}
		if n := fset.File(f.Pos()).LineCount(); n > maxFile {
			files = append(files, item{n, p})
		}
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil || isTable(fd) {
				continue
			}
			n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
			if n > maxFunc {
				funcs = append(funcs, item{n, fmt.Sprintf("%s:%d %s", p, fset.Position(fd.Pos()).Line, name(fd))})
			}
		}
		return nil
	})
	return files, funcs, err
}

// isTable reports whether fd's body is one return of a composite literal.
func isTable(fd *ast.FuncDecl) bool {
	if len(fd.Body.List) != 1 {
		return false
	}
	ret, ok := fd.Body.List[0].(*ast.ReturnStmt)
	if !ok || len(ret.Results) != 1 {
		return false
	}
	e := ret.Results[0]
	if u, ok := e.(*ast.UnaryExpr); ok && u.Op == token.AND {
		e = u.X
	}
	_, ok = e.(*ast.CompositeLit)
	return ok
}

func name(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	t := fd.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	if ix, ok := t.(*ast.IndexExpr); ok {
		t = ix.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + fd.Name.Name
	}
	return fd.Name.Name
}

func report(title string, items []item) {
	sort.Slice(items, func(i, j int) bool { return items[i].lines > items[j].lines })
	fmt.Printf("%s: %d\n", title, len(items))
	for _, it := range items {
		fmt.Printf("  %5d %s\n", it.lines, it.what)
	}
}
