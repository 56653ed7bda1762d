// A stand-in component for test/cli-supervisor.test.ts: one line on stdout, one on stderr, then it exits.
process.stdout.write(`stdout ${process.env.LINE}\n`);
process.stderr.write(`stderr ${process.env.LINE}\n`);
