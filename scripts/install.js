#!/usr/bin/env node
// The package's `install` script (package.json): use a tangent.node that loads, or build one with
// cmake-js against the libtorch it finds. The logic is lib/install/build.ts (compiled to dist/ by
// `prepack`, so it ships in the tarball). In a development checkout (a .git beside package.json, or
// TypeScript sources without dist/) nothing happens here: scripts/setup.sh builds the addon with the native tests and compiles lib/.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const entry = path.join(root, 'dist', 'lib', 'install', 'build.js');

const checkout = fs.existsSync(path.join(root, '.git')) || (!fs.existsSync(entry) && fs.existsSync(path.join(root, 'lib', 'install', 'build.ts')));
if (checkout && !process.env.TANGENT_INSTALL_IN_CHECKOUT) {
  console.log('tangent-edit: development checkout, nothing to install (npm run setup builds the addon)');
  process.exit(0);
}
if (!fs.existsSync(entry)) {
  console.error(`tangent-edit: ${entry} is missing: this package was packed without its build (npm pack runs prepack, which compiles dist/)`);
  process.exit(1);
}
require(entry)
  .installMain(process.argv.slice(2))
  .then((code) => process.exit(code))
  .catch((err) => {
    console.error(err && err.stack ? err.stack : String(err));
    process.exit(1);
  });
