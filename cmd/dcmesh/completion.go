package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// Scripts that ask dcmesh itself for completions (urfave/cli's
// --generate-bash-completion), so they follow the commands and flags of the
// installed version.
const bashCompletion = `# dcmesh bash completion: source <(dcmesh completion bash)
_dcmesh_complete() {
  local cur opts
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  if [[ "$cur" == "-"* ]]; then
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -F _dcmesh_complete dcmesh
`

const zshCompletion = `#compdef dcmesh
# dcmesh zsh completion: dcmesh completion zsh > "${fpath[1]}/_dcmesh"
_dcmesh() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _dcmesh dcmesh
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash or zsh)",
		ArgsUsage: "bash|zsh",
		Description: `bash:  source <(dcmesh completion bash)        # or save it in /etc/bash_completion.d/dcmesh
zsh:   dcmesh completion zsh > "${fpath[1]}/_dcmesh"`,
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash":
				_, err := fmt.Fprint(c.App.Writer, bashCompletion)
				return err
			case "zsh":
				_, err := fmt.Fprint(c.App.Writer, zshCompletion)
				return err
			}
			return fmt.Errorf("completion: say bash or zsh, e.g. source <(dcmesh completion bash)")
		},
	}
}
