package readme

import (
	"go/ast"
	"go/doc/comment"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// eachDocComment calls f with every doc comment of the repository's Go
// files, parsed as go doc parses it, and where it is.
func eachDocComment(t *testing.T, f func(pos token.Position, d *comment.Doc)) {
	t.Helper()
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
		file, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		n++
		check := func(cg *ast.CommentGroup) {
			if cg != nil {
				f(fset.Position(cg.Pos()), p.Parse(cg.Text()))
			}
		}
		check(file.Doc)
		ast.Inspect(file, func(n ast.Node) bool {
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

// paragraphs returns the text of every paragraph of d, those of lists
// included.
func paragraphs(d *comment.Doc) (out []string, inLists []string) {
	for _, b := range d.Content {
		switch b := b.(type) {
		case *comment.Paragraph:
			out = append(out, plain(b.Text))
		case *comment.List:
			for _, it := range b.Items {
				for _, c := range it.Content {
					s := plain(c.(*comment.Paragraph).Text)
					out = append(out, s)
					inLists = append(inLists, s)
				}
			}
		}
	}
	return out, inLists
}

// TestDocCodeNotInLists: no doc comment of the repository has code that go
// doc reflows into prose. A Go doc comment list holds paragraphs only, so
// an indented block after a list item's text continues the item: go doc
// and pkg.go.dev print
//
//	baseline := sql.OpenDB(...) router, err := sqlroute.New(...) ...
//
// as one wrapped line. Code after a list needs a paragraph of its own
// before it. A list paragraph holding ":= " or a line "..." is taken for
// such code.
func TestDocCodeNotInLists(t *testing.T) {
	eachDocComment(t, func(pos token.Position, d *comment.Doc) {
		_, inLists := paragraphs(d)
		for _, text := range inLists {
			for _, line := range strings.Split(text, "\n") {
				if strings.Contains(line, ":= ") || strings.TrimSpace(line) == "..." {
					t.Errorf("%s: code in a list item, which go doc reflows as prose: %q (end the list with a paragraph first)", pos, line)
					break
				}
			}
		}
	})
}

// unlinked is a doc link directly followed by a letter (a plural "s"
// after the closing bracket), which is no link: go doc and pkg.go.dev
// show the brackets.
var unlinked = regexp.MustCompile(`\[[A-Za-z_][\w.]*\][A-Za-z]`)

// TestDocLinksRender: every [Name] in a doc comment is a link, not text
// that go doc prints with its brackets.
func TestDocLinksRender(t *testing.T) {
	eachDocComment(t, func(pos token.Position, d *comment.Doc) {
		all, _ := paragraphs(d)
		for _, text := range all {
			for _, m := range unlinked.FindAllString(text, -1) {
				t.Errorf("%s: %q is not a doc link (go doc prints the brackets); write it without a letter after the ]", pos, m)
			}
		}
	})
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
