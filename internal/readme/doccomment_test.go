package readme

import (
	"go/ast"
	"go/doc/comment"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocCodeNotInLists: no doc comment of the repository has code that go
// doc reflows into prose. A Go doc comment list holds paragraphs only, so
// an indented block after a list item's text continues the item: go doc
// and pkg.go.dev print
//
//	baseline := sql.OpenDB(...) router, err := sqlroute.New(...) ...
//
// as one wrapped line. Code after a list needs the code block indent
// (a tab) to end the list. A list paragraph holding ":= " or a line "..."
// is taken for such code.
func TestDocCodeNotInLists(t *testing.T) {
	var p comment.Parser
	n := 0
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name != "." && name != ".." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		n++
		check := func(cg *ast.CommentGroup) {
			if cg == nil {
				return
			}
			for _, b := range p.Parse(cg.Text()).Content {
				l, ok := b.(*comment.List)
				if !ok {
					continue
				}
				for _, it := range l.Items {
					for _, c := range it.Content {
						text := plain(c.(*comment.Paragraph).Text)
						for _, line := range strings.Split(text, "\n") {
							if strings.Contains(line, ":= ") || strings.TrimSpace(line) == "..." {
								t.Errorf("%s: code in a list item, which go doc reflows as prose: %q (indent it with a tab to end the list)",
									fset.Position(cg.Pos()), line)
								break
							}
						}
					}
				}
			}
		}
		check(f.Doc)
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				check(n.Doc)
			case *ast.GenDecl:
				check(n.Doc)
			case *ast.TypeSpec:
				check(n.Doc)
			case *ast.ValueSpec:
				check(n.Doc)
			case *ast.Field:
				check(n.Doc)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 100 {
		t.Fatalf("read %d Go files; want the repository's", n)
	}
}

// plain returns the text of a paragraph, links as their text.
func plain(ts []comment.Text) string {
	var b strings.Builder
	for _, t := range ts {
		switch t := t.(type) {
		case comment.Plain:
			b.WriteString(string(t))
		case comment.Italic:
			b.WriteString(string(t))
		case *comment.Link:
			b.WriteString(plain(t.Text))
		case *comment.DocLink:
			b.WriteString(plain(t.Text))
		}
	}
	return b.String()
}
